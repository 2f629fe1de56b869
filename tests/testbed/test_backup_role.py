"""roles/backup on a real systemd container: the units, `qnprov backup run/list/verify` through
systemd and Ansible, the repository on a podman volume attached only for the backup, and the
failure alert in the journal at priority err when it is not attached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qnprov import paths, runner, testbed
from qnprov_testing import backup_volume

REPOSITORY = "/srv/qnprov-backup-repo"
PASSWORD = "role-test-password-5e1d"  # a throw-away repository's key


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    testbed.prepare_host()
    testbed.build_image()
    name = f"qnprov-test-backup-{uuid.uuid4().hex[:8]}"
    testbed.remove_container(name)
    subprocess.run(testbed.systemd_run_args(name), check=True, capture_output=True)
    try:
        assert testbed.wait_for_systemd(name) in {"running", "degraded"}
        yield name
    finally:
        testbed.remove_container(name)
        subprocess.run(["podman", "volume", "rm", "-f", f"{name}-repo"], capture_output=True, check=False)


def _in(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", name, *cmd], capture_output=True, text=True, check=False)


def _inventory(container: str, tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"mail_all": {"hosts": {"mail1": {
        "ansible_connection": "containers.podman.podman", "ansible_host": container, "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3", "backup_repository": REPOSITORY,
        "backup_password": PASSWORD, "backup_directory": False, "backup_mailboxes": False}}}}}}))
    return path


def _qnprov(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qnprov", *args], capture_output=True, text=True, timeout=600,
                          cwd=paths.PROJECT_ROOT, env={**os.environ, "QNPROV_STATE_DIR": str(state)}, check=False)


def test_the_role_backs_up_to_a_volume_attached_only_for_the_backup(container: str, tmp_path: Path) -> None:
    inventory = _inventory(container, tmp_path)
    state = tmp_path / "state"
    volume = f"{container}-repo"
    _in(container, "mkdir", "-p", "/etc/qnprov/tls")
    _in(container, "sh", "-c", "echo 'a certificate' > /etc/qnprov/tls/fullchain.pem")

    refused = runner.run_playbook(paths.PLAYBOOKS_DIR / "backup.yml", inventory=inventory)
    assert refused.failed
    assert [(f.task, f.message) for f in refused.failures] == [("Stop on a repository the host cannot use",
        f"the repository {REPOSITORY} is on this host's own disk (the file system of /var/backups/qnprov/staging): "
        "mount the backup disk there first")]

    with backup_volume.repository_mounted(container, volume, REPOSITORY):
        deployed = runner.run_playbook(paths.PLAYBOOKS_DIR / "backup.yml", inventory=inventory)
        assert not deployed.failed, deployed.failures
        assert _in(container, "stat", "-c", "%a %U", "/etc/qnprov/backup/restic-password").stdout == "600 root\n"
        assert _in(container, "systemctl", "is-enabled", "qnprov-backup.timer").stdout.strip() == "enabled"
        ran = _qnprov("backup", "run", "-i", str(inventory), "--json", state=state)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        run = json.loads(ran.stdout)["hosts"]["mail1"]
        assert run["ok"] is True and run["snapshot"], run
        listed = json.loads(_qnprov("backup", "list", "-i", str(inventory), "--json", state=state).stdout)
        [snap] = listed["hosts"]["mail1"]["snapshots"]
        assert snap["id"] == run["snapshot"][:8] and snap["host"] == "mail1" and snap["contents"]["files"] == ["tls"]
        verified = _qnprov("backup", "verify", "-i", str(inventory), "--json", state=state)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["hosts"]["mail1"]["compared"] == 1
    source = Path(backup_volume.ensure_volume(volume))
    assert (source / "config").is_file() and len(list((source / "snapshots").iterdir())) == 1
    summary = _in(container, "journalctl", "-u", "qnprov-backup.service", "-o", "cat").stdout
    assert f'"snapshot": "{run["snapshot"]}"' in summary and "qnprov-backup summary" in summary

    # The volume is gone: the timer's next run fails, and the alert says why at priority err.
    assert _in(container, "systemctl", "start", "qnprov-backup.service").returncode != 0
    errors = ""
    for _ in range(40):  # OnFailure= starts the alert unit right after the failure
        errors = _in(container, "journalctl", "-p", "err", "-t", "qnprov-backup", "-o", "cat").stdout
        if errors:
            break
        time.sleep(0.25)
    assert (f"qnprov-backup failed on mail1: the repository {REPOSITORY} is on this host's own disk "
            "(the file system of /var/backups/qnprov/staging): mount the backup disk there first") in errors
    assert PASSWORD not in _in(container, "journalctl", "-o", "cat").stdout
