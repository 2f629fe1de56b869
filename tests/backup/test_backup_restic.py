"""Real restic, real slapd: the host script backs a running directory up, and the dumps restored
from the snapshot rebuild it in a fresh slapd (slapadd) with every entry as it was."""

from __future__ import annotations

import base64
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from qnprov_testing.backup_script import HostScript
from qnprov_testing.slapd import SLAPADD, SLAPD, TestSlapd, free_loopback_port, running_test_slapd, ssha_hash

pytestmark = [pytest.mark.slapd,
              pytest.mark.skipif(shutil.which("restic") is None, reason="restic missing: scripts/bootstrap.sh")]

AGENCY_DN = "ou=SKHCN,ou=agencies,dc=quangninh,dc=test"
ACCOUNTS = 120


def seed(server: TestSlapd) -> None:
    """An agency and accounts with Vietnamese names (base64 in LDIF) and password hashes."""
    records = [f"dn: {AGENCY_DN}\nobjectClass: organizationalUnit\nou: SKHCN\n"]
    for n in range(ACCOUNTS):
        cn = base64.b64encode(f"Nguyễn Văn Số {n}".encode()).decode()
        records.append(f"dn: uid=user{n:04d},{AGENCY_DN}\nobjectClass: inetOrgPerson\nuid: user{n:04d}\n"
                       f"cn:: {cn}\nsn: Nguyen\nmail: user{n:04d}@quangninh.test\n"
                       f"userPassword: {ssha_hash(f'pw-{n}')}\n")
    server.ldap_tool("ldapadd", input_text="\n".join(records))


def entries(url: str, root_dn: str, password: str, base: str) -> dict[str, list[str]]:
    """dn -> sorted attribute lines, user attributes and the ones slapadd must keep."""
    out = subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", url, "-D", root_dn, "-w", password,
                          "-b", base, "*", "entryUUID", "entryCSN", "createTimestamp", "modifyTimestamp"],
                         capture_output=True, text=True, check=True).stdout
    found: dict[str, list[str]] = {}
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        found[lines[0]] = sorted(lines[1:])
    return found


def restore_into_fresh_slapd(ldap_dir: Path, old: TestSlapd, workdir: Path) -> subprocess.Popen[bytes]:
    """slapadd -n 0 and -n 1 of the restored dumps, as docs/backup.md's manual restore does; the
    test slapd's paths (its work directory) are the only thing rewritten."""
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copy2(old.workdir / name, workdir / name)
    # slapcat folds lines at 76 columns: unfold before the path is rewritten.
    config = (ldap_dir / "config.ldif").read_text().replace("\n ", "").replace(str(old.workdir), str(workdir))
    assert str(old.workdir) not in config
    (workdir / "config.ldif").write_text(config)
    (workdir / "slapd.d").mkdir()
    (workdir / "db").mkdir()
    for number, source in (("0", workdir / "config.ldif"), ("1", ldap_dir / "data.ldif")):
        done = subprocess.run([str(SLAPADD), "-n", number, "-F", str(workdir / "slapd.d"), "-l", str(source)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    port = free_loopback_port()
    process = subprocess.Popen([str(SLAPD), "-d", "0", "-F", str(workdir / "slapd.d"), "-h",
                                f"ldap://127.0.0.1:{port}/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            process.port = port  # type: ignore[attr-defined]
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the restored slapd did not listen")


def test_backup_of_a_running_slapd_restores_into_a_fresh_one(host_script: HostScript, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "2026-12-07.jsonl").write_bytes(b'{"seq":1}\n{"seq":2}\n{"seq":3, "partial')
    keys = tmp_path / "dkim"
    keys.mkdir()
    (keys / "quangninh.test.mail.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n")
    with running_test_slapd(tmp_path) as server:
        base_dit = server.count_entries()  # what the test slapd starts with (DIT, policies, services)
        seed(server)
        host_script.write_config(ldap={"enabled": True, "slapcat": "/usr/sbin/slapcat",
                                       "config_dir": str(server.workdir / "slapd.d")},
                                 files=[{"name": "dkim", "path": str(keys)},
                                        {"name": "tls", "path": str(tmp_path / "absent")}],
                                 audit_dir=str(audit))
        assert host_script.run("init")[1]["initialized"] is True
        code, run, _ = host_script.run("run")
        assert code == 0 and run["ok"], run
        assert run["ldap_entries"] == base_dit + 1 + ACCOUNTS  # base DIT + agency + accounts
        staging = Path(host_script.config["staging_dir"])
        modes = {part: stat.S_IMODE((staging / part).stat().st_mode) for part in ("", "ldap", "files", "audit")}
        assert modes == {"": 0o711, "ldap": 0o700, "files": 0o700, "audit": 0o700}
        before = entries(server.url, server.root_dn, server.root_password, server.base_dn)
        assert len(before) == run["ldap_entries"]

        code, listed, _ = host_script.run("list")
        assert code == 0, listed
        [snap] = listed["snapshots"]
        assert snap["id"] == run["snapshot"][:8] and snap["host"] == "mail1"
        assert snap["paths"] == [host_script.config["staging_dir"]]
        assert snap["size"] > 0 and snap["contents"]["ldap_entries"] == run["ldap_entries"]
        assert snap["contents"]["files"] == ["dkim"] and snap["contents"]["audit_files"] == 1

        target = tmp_path / "restored"
        subprocess.run(["restic", "restore", snap["id"], "--target", str(target)], check=True, capture_output=True,
                       env={"RESTIC_REPOSITORY": host_script.config["repository"],
                            "RESTIC_PASSWORD_FILE": host_script.config["password_file"], "PATH": "/usr/bin:/bin"})
        staged = target / host_script.config["staging_dir"].lstrip("/")
        # The audit trail is staged up to its last complete record.
        assert (staged / "audit" / "2026-12-07.jsonl").read_bytes() == b'{"seq":1}\n{"seq":2}\n'
        assert (staged / "files" / "dkim" / "quangninh.test.mail.key").read_text() == (
            keys / "quangninh.test.mail.key").read_text()
        fresh_dir = tmp_path / "fresh"
        fresh_dir.mkdir()
        fresh = restore_into_fresh_slapd(staged / "ldap", server, fresh_dir)
        try:
            after = entries(f"ldap://127.0.0.1:{fresh.port}", server.root_dn,  # type: ignore[attr-defined]
                            server.root_password, server.base_dn)
        finally:
            fresh.terminate()
            fresh.wait(timeout=15)
    assert after == before
    assert any(line.startswith("entryUUID:") for line in after[f"dn: uid=user0007,{AGENCY_DN}"])


def test_verify_restores_a_sample_and_finds_a_damaged_repository(host_script: HostScript, tmp_path: Path) -> None:
    files = tmp_path / "policy"
    files.mkdir()
    (files / "overrides.yml").write_text("local_domains: [quangninh.test]\n")
    host_script.write_config(files=[{"name": "policy", "path": str(files)}])
    host_script.run("init")
    assert host_script.run("run")[0] == 0
    code, verified, _ = host_script.run("verify")
    assert code == 0 and verified["check"] == "ok" and verified["compared"] == 1, verified
    # Damage every data pack: check --read-data-subset 100% reads them and must fail.
    for pack in (Path(host_script.config["repository"]) / "data").rglob("*"):
        if pack.is_file():
            pack.chmod(0o600)
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
    code, failed, _ = host_script.run("verify")
    assert code == 1 and failed["ok"] is False
    assert failed["error"]["kind"] == "restic" and "restic failed" in failed["error"]["message"], failed


def test_a_wrong_password_is_named_and_not_printed(host_script: HostScript, tmp_path: Path) -> None:
    host_script.run("init")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-7f3a\n")
    host_script.write_config(password_file=str(wrong))
    for command in ("list", "run", "verify", "init"):
        code, document, stderr = host_script.run(command)
        assert code == 1, document
        assert document["error"]["kind"] == "wrong-password", document
        assert document["error"]["message"] == (
            f"the repository password is wrong: no key in {host_script.config['repository']} opens with it")
        assert "not-the-password-7f3a" not in str(document) + stderr


def test_a_repository_on_the_hosts_own_disk_is_refused(host_script: HostScript, tmp_path: Path) -> None:
    host_script.write_config(require_separate_fs=True)
    for command in ("init", "run", "list"):
        code, document, _ = host_script.run(command)
        assert code == 1 and document["error"]["kind"] == "same-disk", document
        assert document["error"]["message"] == (
            f"the repository {host_script.config['repository']} is on this host's own disk (the file system of "
            f"{host_script.config['staging_dir']}): mount the backup disk there first")
    assert not Path(host_script.config["repository"]).exists()  # nothing was created there
    # On another file system (/dev/shm is a tmpfs here) it is accepted.
    shm = Path("/dev/shm") / f"qnprov-backup-test-{tmp_path.name}"
    try:
        host_script.write_config(repository=str(shm))
        code, document, _ = host_script.run("init")
        assert code == 0 and document["initialized"] is True, document
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_a_missing_repository_is_named(host_script: HostScript, tmp_path: Path) -> None:
    host_script.write_config(repository=str(tmp_path / "nowhere"))
    code, document, _ = host_script.run("list")
    assert code == 1 and document["error"]["kind"] == "missing-repository"
    assert document["error"]["message"].startswith(f"there is no restic repository at {tmp_path / 'nowhere'}")
    assert not (tmp_path / "nowhere").exists()  # list never creates one


def test_a_snapshot_of_another_host_is_refused(host_script: HostScript) -> None:
    host_script.run("init")
    host_script.write_config(host="mail2")
    code, run, _ = host_script.run("run")
    assert code == 0, run
    host_script.write_config(host="mail1")
    assert host_script.run("list")[1]["snapshots"] == []  # each host lists its own
    code, document, _ = host_script.run("verify", "--snapshot", run["snapshot"])
    assert code == 1 and document["error"]["kind"] == "other-host"
    assert document["error"]["message"] == f"snapshot {run['snapshot']} was taken on host mail2, not on mail1"
    code, document, _ = host_script.run("verify")
    assert document["error"]["kind"] == "no-snapshot"
