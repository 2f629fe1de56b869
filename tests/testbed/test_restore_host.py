"""`qnprov restore --host` onto a brand-new systemd container: the issue-11 emergency rebuild.

A first container gets a real slapd (Debian's package, seeded with an agency and accounts), a real
Dovecot (passwd-file users, maildir, roles/dovecot's '/' separator and mail_home layout) with mail in
several folders and a Sieve script, DKIM key, TLS and audit files, and the backup role deployed by
its playbook. `qnprov backup run` backs it up into a repository on a podman volume of its own; more
mail arrives after the backup. The container is then DESTROYED (the volume is kept) and a new one
is created from the image.

What "converge" means here, honestly: the new container gets slapd, ldap-utils and Dovecot installed
and configured by this test (the same commands as the first container; in this testbed there is no
full lab host to run site.yml on in minutes), then `qnprov restore --host --skip-site-converge`
converges playbooks/backup.yml itself and restores. So site.yml is not part of this test; the rest
of the command (backup role converge, the host script's restore-host, services, checks) is real.

Asserted: every LDAP entry is back with its entryUUID; each mailbox's messages (folder, GUID) equal
the backup point's and the newer mail is not there; the Sieve script and its active link are back;
the DKIM key, TLS file and audit trail are back byte-identical; slapd and dovecot are active and
answer. Before that: a wrong repository password and another host's snapshot are refused with a
clear error, and the services are left stopped; `--check` says what would be done and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qnprov import paths, runner
from qnprov_testing import backup_volume
from qnprov_testing.cli import run_qnprov
from qnprov_testing.containers import exec_in, systemd_container
from qnprov_testing.dovecot import passwd_file_conf

REPOSITORY = "/srv/qnprov-backup-repo"
PASSWORD = "restorehost-test-password-41b9"  # a throw-away repository's key
LDAP_ADMIN_PASSWORD = "restorehost-ldap-admin-77"  # a throw-away directory's rootpw
BASE = "dc=quangninh,dc=test"
ADMIN = f"cn=admin,{BASE}"
AN, BINH = "an@quangninh.test", "binh@quangninh.test"
ACCOUNTS = 40

DOVECOT_CONF = passwd_file_conf()

# What this test converges on each container (the part of site.yml this testbed stands in for).
CONVERGE = f"""set -e
printf '%s\\n' 'slapd slapd/domain string quangninh.test' 'slapd shared/organization string Quang Ninh' \
  'slapd slapd/password1 password {LDAP_ADMIN_PASSWORD}' 'slapd slapd/password2 password {LDAP_ADMIN_PASSWORD}' \
  'slapd slapd/no_configuration boolean false' | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slapd ldap-utils dovecot-core
getent group vmail || groupadd -g 5000 vmail
getent passwd vmail || useradd -u 5000 -g 5000 -d /var/vmail -M vmail
mkdir -p /var/vmail && chown vmail:vmail /var/vmail
: > /etc/dovecot/users
for u in {AN} {BINH}; do
  echo "$u:{{PLAIN}}unused:5000:5000::/var/vmail/quangninh.test/${{u%@*}}" >> /etc/dovecot/users
done
mkdir -p /var/log/qnprov/audit /var/lib/rspamd/dkim /etc/qnprov/tls
"""


def _save(user: str, folder: str, ident: str) -> str:
    return (f"printf 'Message-ID: <{ident}@quangninh.test>\\nFrom: x@quangninh.test\\nSubject: {ident}\\n\\n"
            f"body of {ident}\\n' | doveadm save -u {user} -m '{folder}'\n")


SEED_MAIL = (f"set -e\ndoveadm mailbox create -u {AN} Projects Projects/Sub\ndoveadm mailbox create -u {BINH} Archive\n"
             + "".join([_save(AN, "INBOX", f"an-in{i}") for i in (1, 2, 3)]
                       + [_save(AN, "Projects", "an-p1"), _save(AN, "Projects/Sub", "an-s1"),
                          _save(BINH, "INBOX", "binh-in1"), _save(BINH, "Archive", "binh-a1")])
             + "mkdir -p /var/vmail/quangninh.test/an/sieve\n"
             + "echo 'require \"fileinto\"; fileinto \"Projects\";' "
             "> /var/vmail/quangninh.test/an/sieve/projects.sieve\n"
             + "ln -s sieve/projects.sieve /var/vmail/quangninh.test/an/.dovecot.sieve\n"
             + "chown -R vmail:vmail /var/vmail\n")
NEWER = _save(AN, "INBOX", "an-in4-newer") + _save(BINH, "Archive", "binh-a2-newer")
SEED_FILES = """set -e
printf -- '-----BEGIN PRIVATE KEY-----\\nnot a real key\\n' > /var/lib/rspamd/dkim/quangninh.test.mail.key
chmod 600 /var/lib/rspamd/dkim/quangninh.test.mail.key
echo 'a certificate' > /etc/qnprov/tls/fullchain.pem
printf '{"seq":1,"prev":"0"}\\n{"seq":2,"prev":"a"}\\n' > /var/log/qnprov/audit/2026-12-07.jsonl
"""


def _ldif() -> str:
    records = [f"dn: ou=agencies,{BASE}\nobjectClass: organizationalUnit\nou: agencies\n",
               f"dn: ou=SKHCN,ou=agencies,{BASE}\nobjectClass: organizationalUnit\nou: SKHCN\n"]
    for n in range(ACCOUNTS):
        records.append(f"dn: uid=user{n:03d},ou=SKHCN,ou=agencies,{BASE}\nobjectClass: inetOrgPerson\n"
                       f"uid: user{n:03d}\ncn: User {n}\nsn: Nguyen\nmail: user{n:03d}@quangninh.test\n")
    return "\n".join(records)


def _in(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return exec_in(name, *cmd)


def _sh(name: str, script: str, stdin: str | None = None) -> str:
    done = subprocess.run(["podman", "exec", "-i", name, "sh", "-c", script], input=stdin, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _converge(name: str) -> None:
    _sh(name, CONVERGE)
    _sh(name, "cat > /etc/dovecot/dovecot.conf", stdin=DOVECOT_CONF)
    _sh(name, "systemctl restart dovecot")


def _entries(name: str) -> dict[str, str]:
    """dn -> entryUUID of every entry under the base, read through slapd."""
    out = _sh(name, f"ldapsearch -x -LLL -o ldif-wrap=no -H ldapi:/// -D {ADMIN} -w {LDAP_ADMIN_PASSWORD} "
                    f"-b {BASE} '(objectClass=*)' entryUUID")
    found = {}
    for block in out.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found[lines["dn"]] = lines["entryUUID"]
    return found


def _guids(name: str, user: str) -> list[str]:
    done = _in(name, "doveadm", "-f", "tab", "fetch", "-u", user, "mailbox guid hdr.message-id", "all")
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines()[1:])


def _active(name: str, service: str) -> str:
    return _in(name, "systemctl", "is-active", service).stdout.strip()


def _assert_stopped(name: str) -> None:
    """Neither unit is active, and no slapd or dovecot process is left (not only what systemd says)."""
    assert _active(name, "slapd") != "active" and _active(name, "dovecot") != "active"
    assert _in(name, "pgrep", "-x", "slapd").returncode == 1
    assert _in(name, "pgrep", "-x", "dovecot").returncode == 1


def _inventory(path: Path, container: str, password: str) -> Path:
    path.write_text(yaml.safe_dump({"all": {"children": {"mail_all": {"hosts": {"mail1": {
        "ansible_connection": "containers.podman.podman", "ansible_host": container, "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3", "backup_repository": REPOSITORY,
        "backup_password": password, "backup_directory": True, "backup_mailboxes": True,
        "backup_vmail_user": "vmail", "backup_timer_enabled": False}}}}}}))
    return path


def _qnprov(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return run_qnprov(*args, state=state, timeout=1200)


def _restore(lab: dict[str, Any], inventory: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = _qnprov("restore", "-i", str(inventory), "--host", "mail1", "--skip-site-converge", *args, "--json",
                   state=lab["state"])
    assert PASSWORD not in done.stdout + done.stderr and LDAP_ADMIN_PASSWORD not in done.stdout + done.stderr
    assert done.stdout.startswith("{"), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("restorehost")
    state = tmp / "state"
    volume = f"qnprov-test-restorehost-{uuid.uuid4().hex[:8]}-repo"
    figures: dict[str, float] = {}
    try:
        # --- the host that will be lost -------------------------------------------------------
        with systemd_container("qnprov-test-rhost-a-") as old:
            begun = time.monotonic()
            _converge(old)
            inventory = _inventory(tmp / "hosts.yml", old, PASSWORD)
            with backup_volume.repository_mounted(old, volume, REPOSITORY):
                deployed = runner.run_playbook(paths.PLAYBOOKS_DIR / "backup.yml", inventory=inventory)
                assert not deployed.failed, deployed.failures
                figures["first_converge_seconds"] = round(time.monotonic() - begun, 1)
                _sh(old, f"ldapadd -x -H ldapi:/// -D {ADMIN} -w {LDAP_ADMIN_PASSWORD}", stdin=_ldif())
                _sh(old, SEED_MAIL)
                _sh(old, SEED_FILES)
                at_backup = {"entries": _entries(old), "an": _guids(old, AN), "binh": _guids(old, BINH)}
                assert len(at_backup["entries"]) == 1 + 2 + ACCOUNTS  # the base, two ous, the accounts
                ran = _qnprov("backup", "run", "-i", str(inventory), "--json", state=state)
                assert ran.returncode == 0, ran.stdout + ran.stderr
                snapshot = json.loads(ran.stdout)["hosts"]["mail1"]["snapshot"]
                # After the backup: newer mail in both mailboxes (not in the snapshot).
                _sh(old, NEWER)
                newer = {"an": _guids(old, AN), "binh": _guids(old, BINH)}
                # A snapshot of another host in the same repository.
                _sh(old, f"mkdir -p /var/tmp/other && echo x > /var/tmp/other/f && RESTIC_REPOSITORY={REPOSITORY} "
                    "RESTIC_PASSWORD_FILE=/etc/qnprov/backup/restic-password restic backup --host mail2 --tag qnprov "
                    "--json /var/tmp/other > /var/tmp/other.json")
                other = next(json.loads(line) for line in _sh(old, "cat /var/tmp/other.json").splitlines()
                             if '"summary"' in line)["snapshot_id"]
        # The container is gone (systemd_container removed it); only the repository volume is left.
        # --- the brand-new host -------------------------------------------------------------------
        with systemd_container("qnprov-test-rhost-b-") as new:
            begun = time.monotonic()
            _converge(new)
            figures["new_host_converge_seconds"] = round(time.monotonic() - begun, 1)
            assert len(_entries(new)) == 1  # the package's empty directory: the base entry only
            assert _guids(new, AN) == []
            with backup_volume.repository_mounted(new, volume, REPOSITORY):
                yield {"container": new, "state": state, "snapshot": snapshot, "other": other,
                       "at_backup": at_backup, "newer": newer, "figures": figures,
                       "inventory": _inventory(tmp / "hosts-new.yml", new, PASSWORD),
                       "bad_inventory": _inventory(tmp / "hosts-bad.yml", new, "not-the-repository-key")}
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, check=False)
        print(f"\nrestore-host figures: {json.dumps(figures, sort_keys=True)}")


def test_a_wrong_repository_key_is_refused_and_the_services_stay_stopped(lab: dict[str, Any]) -> None:
    new = lab["container"]
    assert _active(new, "slapd") == "active" and _active(new, "dovecot") == "active"  # the converge started them
    code, document, _ = _restore(lab, lab["bad_inventory"])
    assert code == 1 and document["ok"] is False
    assert document["failed_step"] == "snapshot"
    assert document["error"]["kind"] == "wrong-password"
    assert document["error"]["message"] == (
        f"step snapshot failed: the repository password is wrong: no key in {REPOSITORY} opens with it; the "
        "services were left stopped (slapd, dovecot)")
    assert [s["step"] for s in document["steps"]] == ["converge-backup", "stop-services", "snapshot"]
    _assert_stopped(new)


def test_another_hosts_snapshot_is_refused_and_the_services_stay_stopped(lab: dict[str, Any]) -> None:
    new = lab["container"]
    code, document, _ = _restore(lab, lab["inventory"], "--snapshot", lab["other"][:8])
    assert code == 1 and document["error"]["kind"] == "other-host"
    assert document["error"]["message"] == (
        f"step snapshot failed: snapshot {lab['other'][:8]} was taken on host mail2, not on mail1; the services "
        "were left stopped (slapd, dovecot)")
    _assert_stopped(new)


def test_check_says_what_would_be_done_and_changes_nothing(lab: dict[str, Any]) -> None:
    new = lab["container"]
    before = _sh(new, "ls -la /etc/ldap/slapd.d /var/lib/ldap /var/log/qnprov/audit /var/lib/rspamd/dkim")
    code, document, stderr = _restore(lab, lab["inventory"], "--check")
    assert code == 0, (document, stderr)
    assert (document["ok"], document["check"], document["snapshot"]) == (True, True, lab["snapshot"][:8])
    assert document["contents"]["mailboxes"] == 2 and document["contents"]["messages"] == 7
    assert document["contents"]["ldap_entries"] == len(lab["at_backup"]["entries"])
    assert document["plan"][:2] == ["converge playbooks/backup.yml --limit mail1", "stop services: dovecot, slapd"]
    assert document["plan"][2:4] == ["restore files: dkim, tls", "restore the audit trail: 1 files"]
    assert document["plan"][4].startswith("reload the directory: slapadd -n 0 (")
    assert document["plan"][4].endswith(f"-n 1 ({len(lab['at_backup']['entries'])} entries)")
    assert document["plan"][5:] == ["restore 2 mailboxes (doveadm backup -R), 7 messages, Sieve scripts",
                                    "start services: slapd, dovecot, check they answer", "verify the audit chain"]
    assert document["steps"] == []
    assert _sh(new, "ls -la /etc/ldap/slapd.d /var/lib/ldap /var/log/qnprov/audit /var/lib/rspamd/dkim") == before


def test_the_host_is_rebuilt_from_its_backup(lab: dict[str, Any]) -> None:
    new = lab["container"]
    began = time.monotonic()
    code, document, stderr = _restore(lab, lab["inventory"])
    assert code == 0, json.dumps(document, indent=1) + stderr
    lab["figures"]["restore_command_seconds"] = round(time.monotonic() - began, 1)
    lab["figures"]["restore_reported_seconds"] = document["seconds"]
    # RTO: the new container's converge (this test's stand-in for site.yml) plus the restore command,
    # against the first converge of the lost host (the same stand-in plus backup.yml).
    lab["figures"]["rto_seconds"] = round(lab["figures"]["new_host_converge_seconds"]
                                          + lab["figures"]["restore_command_seconds"], 1)
    lab["figures"]["steps"] = {s["step"]: s["seconds"] for s in document["steps"]}
    assert document["ok"] is True and document["snapshot"] == lab["snapshot"][:8]
    assert [s["step"] for s in document["steps"]] == [
        "converge-backup", "stop-services", "snapshot", "restic-restore", "files", "audit", "directory", "mailboxes",
        "quarantine", "start-services", "audit-verify"]
    assert all(s["ok"] for s in document["steps"])
    # Every entry is back with its entryUUID (not a new entry of the same name).
    assert _entries(new) == lab["at_backup"]["entries"]
    # Each mailbox holds the backup point's messages, GUIDs and folders; the newer mail is not there.
    assert _guids(new, AN) == lab["at_backup"]["an"] and _guids(new, BINH) == lab["at_backup"]["binh"]
    assert _guids(new, AN) != lab["newer"]["an"]
    assert _sh(new, "ls -A /var/backups/qnprov/restore") == ""  # no scratch copy is left
    # The Sieve script and its active link.
    home = "/var/vmail/quangninh.test/an"
    assert _sh(new, f"cat {home}/sieve/projects.sieve") == 'require "fileinto"; fileinto "Projects";\n'
    assert _sh(new, f"readlink {home}/.dovecot.sieve && stat -c '%U' {home}/sieve/projects.sieve") == (
        "sieve/projects.sieve\nvmail\n")
    # DKIM key, TLS, audit trail: byte-identical, the key still 0600.
    assert _sh(new, "stat -c '%a %U' /var/lib/rspamd/dkim/quangninh.test.mail.key && cat "
                    "/var/lib/rspamd/dkim/quangninh.test.mail.key") == (
        "600 root\n-----BEGIN PRIVATE KEY-----\nnot a real key\n")
    assert _sh(new, "cat /etc/qnprov/tls/fullchain.pem") == "a certificate\n"
    assert _sh(new, "cat /var/log/qnprov/audit/2026-12-07.jsonl") == '{"seq":1,"prev":"0"}\n{"seq":2,"prev":"a"}\n'
    audit = next(s for s in document["steps"] if s["step"] == "audit-verify")
    assert audit["result"] == "qnprov's audit verify is not installed on this host (no milter)"
    # The services run and answer.
    started = next(s for s in document["steps"] if s["step"] == "start-services")
    assert started["services"] == {"slapd": {"active": "active", "answers": True},
                                   "dovecot": {"active": "active", "answers": True}}
    assert _active(new, "slapd") == "active" and _active(new, "dovecot") == "active"
