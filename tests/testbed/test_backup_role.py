"""roles/backup on a real systemd container: the units, `qnprov backup run/list/verify` through
systemd and Ansible, the repository on a podman volume attached only for the backup, and the
failure alert in the journal at priority err when it is not attached.

The container runs a real Dovecot (passwd-file users, maildir, as roles/dovecot's layout) so the
mailboxes are staged by a real `doveadm backup`; the directory is proven on a real slapd in
tests/backup/test_backup_restic.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qnprov import paths, runner
from qnprov_testing import backup_volume
from qnprov_testing.cli import run_qnprov
from qnprov_testing.containers import systemd_container
from qnprov_testing.dovecot import passwd_file_conf

REPOSITORY = "/srv/qnprov-backup-repo"
PASSWORD = "role-test-password-5e1d"  # a throw-away repository's key


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    with systemd_container("qnprov-test-backup-") as name:
        try:
            yield name
        finally:
            subprocess.run(["podman", "volume", "rm", "-f", f"{name}-repo"], capture_output=True, check=False)


def _in(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", name, *cmd], capture_output=True, text=True, check=False)


DOVECOT_CONF = passwd_file_conf(namespace=False)
USERS = ("an@quangninh.test", "binh@quangninh.test")
SEED = f"""set -e
groupadd -g 5000 vmail && useradd -u 5000 -g 5000 -d /var/vmail -M vmail
mkdir -p /var/vmail && chown vmail:vmail /var/vmail
for u in {' '.join(USERS)}; do
  echo "$u:{{PLAIN}}unused:5000:5000::/var/vmail/quangninh.test/${{u%@*}}" >> /etc/dovecot/users
done
systemctl restart dovecot
doveadm mailbox create -u an@quangninh.test Projects
for i in 1 2 3; do printf 'From: x@quangninh.test\nSubject: m%s\n\nbody %s\n' $i $i \
  | doveadm save -u an@quangninh.test -m INBOX; done
printf 'Subject: plan\n\nproject\n' | doveadm save -u an@quangninh.test -m Projects
mkdir -p /var/vmail/quangninh.test/an/sieve
echo 'require "fileinto"; fileinto "Projects";' > /var/vmail/quangninh.test/an/sieve/projects.sieve
chown -R vmail:vmail /var/vmail
"""


def _seed_dovecot(name: str) -> None:
    install = _in(name, "sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND="
                  "noninteractive apt-get install -y -qq --no-install-recommends dovecot-core")
    assert install.returncode == 0, install.stderr[-2000:]
    subprocess.run(["podman", "exec", "-i", name, "sh", "-c", "cat > /etc/dovecot/dovecot.conf"],
                   input=DOVECOT_CONF, text=True, check=True)
    seeded = _in(name, "sh", "-c", SEED)
    assert seeded.returncode == 0, seeded.stderr


def _guids(name: str, *override: str) -> list[str]:
    """(mailbox, GUID) of every message of an@, from the live store or an other maildir."""
    done = _in(name, "doveadm", *override, "-f", "tab", "fetch", "-u", "an@quangninh.test", "mailbox guid", "all")
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines()[1:])


def _inventory(container: str, tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"mail_all": {"hosts": {"mail1": {
        "ansible_connection": "containers.podman.podman", "ansible_host": container, "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3", "backup_repository": REPOSITORY,
        "backup_password": PASSWORD, "backup_directory": False, "backup_mailboxes": True,
        "backup_vmail_user": "vmail"}}}}}}))
    return path


def _qnprov(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return run_qnprov(*args, state=state)


def test_the_role_backs_up_to_a_volume_attached_only_for_the_backup(container: str, tmp_path: Path) -> None:
    inventory = _inventory(container, tmp_path)
    state = tmp_path / "state"
    volume = f"{container}-repo"
    _seed_dovecot(container)
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
        assert run["ok"] is True and run["snapshot"] and run["mailboxes"] == 2, run
        listed = json.loads(_qnprov("backup", "list", "-i", str(inventory), "--json", state=state).stdout)
        [snap] = listed["hosts"]["mail1"]["snapshots"]
        assert snap["id"] == run["snapshot"][:8] and snap["host"] == "mail1" and snap["contents"]["files"] == ["tls"]
        assert (snap["contents"]["mailboxes"], snap["contents"]["messages"]) == (2, 4)
        verified = _qnprov("backup", "verify", "-i", str(inventory), "--json", state=state)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["hosts"]["mail1"]["compared"] == 2  # the TLS file, one mailbox
        # The snapshot's maildir copy holds the same messages (Dovecot's GUIDs) in the same folders.
        _in(container, "mkdir", "-m", "0711", "/var/tmp/restored")  # doveadm reads it as vmail
        restored = _in(container, "env", "RESTIC_PASSWORD_FILE=/etc/qnprov/backup/restic-password",
                       f"RESTIC_REPOSITORY={REPOSITORY}", "restic", "restore", run["snapshot"], "--target",
                       "/var/tmp/restored")
        assert restored.returncode == 0, restored.stderr
    copy = "/var/tmp/restored/var/backups/qnprov/staging"
    live = _guids(container)
    assert len(live) == 4 and {row.split("\t")[0] for row in live} == {"INBOX", "Projects"}
    assert _guids(container, "-o", f"mail_location=maildir:{copy}/mail/an@quangninh.test") == live
    sieve = _in(container, "cat", f"{copy}/sieve/an@quangninh.test/projects.sieve").stdout
    assert sieve == 'require "fileinto"; fileinto "Projects";\n'
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
