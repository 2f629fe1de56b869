"""`qnprov restore mailbox` on a real systemd container: real Dovecot (passwd-file users, maildir,
the '/' separator of roles/dovecot), the backup role deployed by its playbook, real restic, and
the CLI through the real backup_ops.yml playbook. Nothing is mocked.

Two mailboxes with mail in several folders are backed up; newer mail arrives and one backed-up
message is deleted; one folder of one user is then restored into "Restored/...". The restored
folder holds exactly the backup point's messages (Message-IDs, GUIDs and full text), the user's
live folders are as they were, and the other mailbox's files are byte-identical.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qnprov import paths, runner
from qnprov_testing.cli import run_qnprov
from qnprov_testing.containers import exec_in, systemd_container
from qnprov_testing.dovecot import passwd_file_conf

REPOSITORY = "/srv/qnprov-backup-repo"
PASSWORD = "restore-test-password-7c2a"  # a throw-away repository's key
AN, BINH = "an@quangninh.test", "binh@quangninh.test"
CUONG = "cuong@quangninh.test"  # a mailbox at its quota (3 messages): an import into it fails

DOVECOT_CONF = passwd_file_conf(quota=True)


def _save(user: str, folder: str, ident: str) -> str:
    return (f"printf 'Message-ID: <{ident}@quangninh.test>\\nFrom: x@quangninh.test\\nSubject: {ident}\\n\\n"
            f"body of {ident}\\n' | doveadm save -u {user} -m '{folder}'\n")


SEED = f"""set -e
groupadd -g 5000 vmail && useradd -u 5000 -g 5000 -d /var/vmail -M vmail
mkdir -p /var/vmail && chown vmail:vmail /var/vmail
for u in {AN} {BINH}; do
  echo "$u:{{PLAIN}}unused:5000:5000::/var/vmail/quangninh.test/${{u%@*}}" >> /etc/dovecot/users
done
echo "{CUONG}:{{PLAIN}}unused:5000:5000::/var/vmail/quangninh.test/cuong::userdb_quota_rule=*:messages=3" \
  >> /etc/dovecot/users
systemctl restart dovecot
doveadm mailbox create -u {AN} Projects Projects/Sub
doveadm mailbox create -u {BINH} Archive
doveadm mailbox create -u {CUONG} Work
""" + "".join([_save(AN, "INBOX", f"an-in{i}") for i in (1, 2, 3)] + [_save(AN, "Projects", "an-p1"),
              _save(AN, "Projects", "an-p2"), _save(AN, "Projects/Sub", "an-s1"),
              _save(BINH, "INBOX", "binh-in1"), _save(BINH, "INBOX", "binh-in2"), _save(BINH, "Archive", "binh-a1"),
              _save(CUONG, "INBOX", "cuong-in1"), _save(CUONG, "INBOX", "cuong-in2"), _save(CUONG, "Work", "cuong-w1")])
NEWER = _save(AN, "Projects", "an-p3-newer") + _save(AN, "INBOX", "an-in4-newer")


def _in(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return exec_in(name, *cmd)


def _sh(name: str, script: str) -> str:
    done = _in(name, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _messages(name: str, user: str, *query: str) -> list[dict[str, str]]:
    """mailbox, guid, Message-ID and the full text of each message ``query`` selects."""
    done = _in(name, "doveadm", "-f", "json", "fetch", "-u", user, "mailbox guid hdr.message-id text", *query)
    assert done.returncode == 0, done.stderr
    return sorted(json.loads(done.stdout or "[]"), key=lambda m: (m["mailbox"], m["hdr.message-id"]))


def _folders(name: str, user: str) -> list[str]:
    return sorted(_sh(name, f"doveadm mailbox list -u {user}").split())


def _tree_hashes(name: str, path: str) -> str:
    """sha256, mode, owner and size of every file under path: a byte-for-byte fingerprint."""
    return _sh(name, f"cd {path} && find . -type f -printf '%p %m %U %s ' -exec sha256sum {{}} \\; | sort")


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    with systemd_container("qnprov-test-restoremb-") as name:
        yield name


@pytest.fixture(scope="module")
def lab(container: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Dovecot seeded, the role deployed, one backup taken, then newer mail and a deletion."""
    tmp = tmp_path_factory.mktemp("restoremb")
    install = _in(container, "sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND="
                  "noninteractive apt-get install -y -qq --no-install-recommends dovecot-core")
    assert install.returncode == 0, install.stderr[-2000:]
    subprocess.run(["podman", "exec", "-i", container, "sh", "-c", "cat > /etc/dovecot/dovecot.conf"],
                   input=DOVECOT_CONF, text=True, check=True)
    _sh(container, SEED)
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"mail_all": {"hosts": {"mail1": {
        "ansible_connection": "containers.podman.podman", "ansible_host": container, "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3", "backup_repository": REPOSITORY,
        "backup_password": PASSWORD, "backup_directory": False, "backup_mailboxes": True,
        "backup_vmail_user": "vmail", "backup_timer_enabled": False,
        # The repository's separate disk is tested in test_backup_role.py; here it shares the container's.
        "backup_repository_separate_fs": False}}}}}}))
    deployed = runner.run_playbook(paths.PLAYBOOKS_DIR / "backup.yml", inventory=inventory)
    assert not deployed.failed, deployed.failures
    at_backup = {"projects": _messages(container, AN, "mailbox", "Projects"), "an": _messages(container, AN, "all")}
    state = tmp / "state"
    ran = _qnprov("backup", "run", "-i", str(inventory), "--json", state=state)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    snapshot = json.loads(ran.stdout)["hosts"]["mail1"]["snapshot"]
    # After the backup: newer mail in the folder that is restored and in another, and a deletion.
    _sh(container, NEWER + f"doveadm expunge -u {AN} mailbox Projects header Message-ID '<an-p2@quangninh.test>'\n")
    # A snapshot of another host in the same repository (another mail host sharing the backup disk).
    _sh(container, f"mkdir -p /var/tmp/other && echo x > /var/tmp/other/f && RESTIC_REPOSITORY={REPOSITORY} "
        "RESTIC_PASSWORD_FILE=/etc/qnprov/backup/restic-password restic backup --host mail2 --tag qnprov "
        "--json /var/tmp/other > /var/tmp/other.json")
    other = next(json.loads(line) for line in _sh(container, "cat /var/tmp/other.json").splitlines()
                 if '"summary"' in line)["snapshot_id"]
    listed = json.loads(_qnprov("backup", "list", "-i", str(inventory), "--json", state=state).stdout)
    time = listed["hosts"]["mail1"]["snapshots"][0]["time"]
    return {"inventory": inventory, "state": state, "snapshot": snapshot, "other": other, "at_backup": at_backup,
            "date": time[:10], "time": time[:19].replace("T", " ")}


def _qnprov(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return run_qnprov(*args, state=state)


def _restore(lab: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], str]:
    done = _qnprov("restore", "mailbox", *args, "-i", str(lab["inventory"]), "--json", state=lab["state"])
    assert PASSWORD not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.startswith("{") else {}, done.stderr


def _error(lab: dict[str, Any], *args: str) -> tuple[str, str]:
    code, document, stderr = _restore(lab, *args)
    assert code == 1 and document["ok"] is False, (document, stderr)
    error = document["hosts"]["mail1"]["error"]
    return error["kind"], error["message"]


def test_one_folder_of_one_user_is_restored_and_nothing_else_is_written(container: str,
                                                                         lab: dict[str, Any]) -> None:
    vmail = "/var/vmail/quangninh.test"
    binh_messages = _messages(container, BINH, "all")  # first: a fetch updates Dovecot's cache files
    binh_before = _tree_hashes(container, f"{vmail}/binh")
    an_before = _messages(container, AN, "all")
    folders_before = _folders(container, AN)
    into = f"Restored/{lab['date']}"

    # --check says what would be restored and writes nothing.
    code, checked, stderr = _restore(lab, AN, "--folder", "Projects", "--check")
    assert code == 0, stderr
    report = checked["hosts"]["mail1"]
    assert (report["snapshot"], report["folder"], report["into"], report["messages"], report["restored"]) == (
        lab["snapshot"][:8], "Projects", into, 2, False)
    assert report["target_folders"] == {f"{into}/Projects": 2}
    assert _folders(container, AN) == folders_before

    code, restored, stderr = _restore(lab, AN, "--folder", "Projects")
    assert code == 0, stderr
    report = restored["hosts"]["mail1"]
    assert (report["restored"], report["messages"], report["restored_messages"]) == (True, 2, 2)

    # The restored folder holds the backup point's Projects: the deleted message is back, the newer one is not.
    got = _messages(container, AN, "mailbox", f"{into}/Projects")
    want = lab["at_backup"]["projects"]
    assert [m["hdr.message-id"] for m in got] == ["<an-p1@quangninh.test>", "<an-p2@quangninh.test>"]
    assert [(m["guid"], m["hdr.message-id"], m["text"]) for m in got] == [
        (m["guid"], m["hdr.message-id"], m["text"]) for m in want]
    # Only the new folders were added; the user's live mail (with the newer messages) is as it was.
    assert _folders(container, AN) == sorted([*folders_before, "Restored", into, f"{into}/Projects"])
    assert [m for m in _messages(container, AN, "all") if not m["mailbox"].startswith("Restored/")] == an_before
    assert "<an-p3-newer@quangninh.test>" in {m["hdr.message-id"] for m in an_before}
    # The other mailbox: every file byte-identical, the same messages.
    assert _tree_hashes(container, f"{vmail}/binh") == binh_before
    assert _messages(container, BINH, "all") == binh_messages
    # No scratch copy of the mail is left on the host.
    assert _sh(container, "ls -A /var/backups/qnprov/restore") == ""

    # The same restore again: the target exists, refused rather than merged.
    assert _error(lab, AN, "--folder", "Projects") == ("folder-exists", (
        f"the folder {into} already exists in {AN}'s mailbox: nothing was restored (choose another with --into)"))
    assert len(_messages(container, AN, "mailbox", f"{into}/Projects")) == 2


def test_the_whole_mailbox_from_a_named_snapshot_into_a_named_folder(container: str, lab: dict[str, Any]) -> None:
    binh_before = _tree_hashes(container, "/var/vmail/quangninh.test/binh")
    code, restored, stderr = _restore(lab, AN, "--snapshot", lab["snapshot"][:8], "--into", "Before incident")
    assert code == 0, stderr
    report = restored["hosts"]["mail1"]
    assert report["folders"] == {"INBOX": 3, "Projects": 2, "Projects/Sub": 1}
    got = [(m["mailbox"].removeprefix("Before incident/"), m["guid"], m["text"])
           for m in _messages(container, AN, "mailbox", "Before incident/*")]
    assert sorted(got) == sorted((m["mailbox"], m["guid"], m["text"]) for m in lab["at_backup"]["an"])
    assert _tree_hashes(container, "/var/vmail/quangninh.test/binh") == binh_before


def test_bad_input_gets_a_clear_error_and_writes_nothing(container: str, lab: dict[str, Any]) -> None:
    folders = _folders(container, AN)
    assert _error(lab, "nobody@quangninh.test") == (
        "unknown-address", "there is no mailbox nobody@quangninh.test on host mail1 (Dovecot does not know the user)")
    # A user created after the backup: Dovecot knows them, the snapshot does not.
    _sh(container, "echo 'dung@quangninh.test:{PLAIN}unused:5000:5000::/var/vmail/quangninh.test/dung' "
        ">> /etc/dovecot/users")
    assert _error(lab, "dung@quangninh.test") == (
        "not-in-snapshot", f"snapshot {lab['snapshot'][:8]} ({lab['time']}) holds no mailbox dung@quangninh.test")
    assert _error(lab, AN, "--snapshot", "deadbeef") == ("no-snapshot", f"no snapshot deadbeef in {REPOSITORY}")
    assert _error(lab, AN, "--snapshot", lab["other"][:8]) == (
        "other-host", f"snapshot {lab['other'][:8]} was taken on host mail2, not on mail1")
    assert _error(lab, AN, "--folder", "Nope", "--into", "X") == (
        "no-folder", f"snapshot {lab['snapshot'][:8]} has no folder Nope in {AN}'s mailbox")
    assert _error(lab, AN, "--into", "Projects") == (
        "folder-exists", f"the folder Projects already exists in {AN}'s mailbox: nothing was restored "
        "(choose another with --into)")
    # Refused on the controller before any host is asked: path steps, option look-alikes, wildcards.
    for address in ("../../etc@x", "-u@quangninh.test", "an@quangninh.test/../binh", "a*@quangninh.test"):
        done = _qnprov("restore", "mailbox", "-i", str(lab["inventory"]), "--", address, state=lab["state"])
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{address!r} is not a mail address qnprov restores" in done.stderr
    done = _qnprov("restore", "mailbox", AN, "--into=-o", "-i", str(lab["inventory"]), state=lab["state"])
    assert done.returncode == 2 and "--into '-o' is not a folder name" in done.stderr, done.stderr
    # The host script refuses them too when called directly (the controller is not the only guard).
    direct = _in(container, "/usr/local/sbin/qnprov-backup", "restore-mailbox", "--json",
                 "--address=../../etc/x@q", "--folder=*")
    assert json.loads(direct.stdout)["error"] == {"kind": "bad-address", "message": (
        "'../../etc/x@q' is not a mail address qnprov restores (letters, digits and ._%+- before the @, "
        "starting with a letter or digit)")}
    assert _folders(container, AN) == folders


def test_a_failed_import_removes_its_own_folder_and_says_so(container: str, lab: dict[str, Any]) -> None:
    """cuong's mailbox is at its quota: Dovecot refuses the import, and only the new folder was touched."""
    messages, folders = _messages(container, CUONG, "all"), _folders(container, CUONG)
    binh_before = _tree_hashes(container, "/var/vmail/quangninh.test/binh")
    assert len(messages) == 3
    kind, message = _error(lab, CUONG, "--folder", "Work")
    into = f"Restored/{lab['date']}"
    assert kind == "import-failed"
    assert message == (f"doveadm import into {into} failed: Copying box={into}/Work uid=1 failed: Quota exceeded "
                       f"(mailbox for user is full); the rest of {CUONG}'s mailbox was not written, and the partly "
                       f"filled {into} was removed")
    assert _folders(container, CUONG) == folders
    assert _messages(container, CUONG, "all") == messages
    assert _tree_hashes(container, "/var/vmail/quangninh.test/binh") == binh_before
    assert _sh(container, "ls -A /var/backups/qnprov/restore") == ""
