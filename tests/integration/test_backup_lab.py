"""The backup role on the full lab host (slapd, Dovecot with the LDAP userdb, rspamd's DKIM keys,
the milter's policy and audit trail), with its repository on a podman volume of its own.

The volume is attached into the running container only for the deploy and the backups
(qnprov_testing.backup_volume); without it the path is an empty directory on the host's own
disk, where the script refuses to create or use a repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qnprov import lab, paths, runner
from qnprov_testing import backup_volume

pytestmark = pytest.mark.lab

REPOSITORY = "/srv/qnprov-backup-repo"


def qnprov(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qnprov", *args], capture_output=True, text=True, timeout=900,
                          cwd=paths.PROJECT_ROOT, check=False)


def deploy_backup_role(inventory: Path, tmp_path: Path) -> runner.PlaybookResult:
    variables = tmp_path / "backup-vars.json"
    variables.write_text(json.dumps({"backup_repository": REPOSITORY, "backup_timer_enabled": False}))
    variables.chmod(0o600)
    return runner.run_playbook(paths.PLAYBOOKS_DIR / "backup.yml", inventory=inventory, extravars_files=[variables])


def test_backup_run_list_and_verify_on_the_lab(lab_environment: dict[str, str], tmp_path: Path) -> None:
    inventory = lab.default_inventory()
    container = os.environ["QNPROV_TEST_HOST"]
    volume = f"{container}-backup-repo"
    subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, check=False)
    try:
        with backup_volume.repository_mounted(container, volume, REPOSITORY):
            deployed = deploy_backup_role(inventory, tmp_path)
            assert not deployed.failed, deployed.failures
            ran = qnprov("backup", "run", "-i", str(inventory), "--json")
            assert ran.returncode == 0, ran.stdout + ran.stderr
            run = json.loads(ran.stdout)["hosts"]
            [host] = run
            # The lab's base DIT, agency and demo accounts; every account's mailbox.
            assert run[host]["ok"] is True and run[host]["ldap_entries"] > 10, run
            assert run[host]["mailboxes"] >= 3, run
            listed = qnprov("backup", "list", "-i", str(inventory), "--json")
            assert listed.returncode == 0, listed.stderr
            snapshots = json.loads(listed.stdout)["hosts"][host]["snapshots"]
            assert snapshots[-1]["id"] == run[host]["snapshot"][:8] and snapshots[-1]["host"] == host
            contents = snapshots[-1]["contents"]
            assert contents["ldap_entries"] == run[host]["ldap_entries"], contents
            assert contents["ldap_config_entries"] > 5 and contents["mailboxes"] == run[host]["mailboxes"], contents
            assert {"dkim", "tls", "policy"} <= set(contents["files"]), contents
            verified = qnprov("backup", "verify", "-i", str(inventory), "--json")
            assert verified.returncode == 0, verified.stdout + verified.stderr
            assert json.loads(verified.stdout)["hosts"][host]["check"] == "ok"
        assert not backup_volume.is_mounted(container, REPOSITORY)
        source = Path(backup_volume.ensure_volume(volume))
        assert (source / "config").is_file() and any((source / "snapshots").iterdir())
        gone = qnprov("backup", "list", "-i", str(inventory), "--json")
        assert gone.returncode == 1
        assert json.loads(gone.stdout)["hosts"][host]["error"]["kind"] == "same-disk"
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, check=False)
