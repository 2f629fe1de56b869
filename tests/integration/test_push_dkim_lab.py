"""qnprov push dkim rotate on the lab (issue 12): two phases, the lab's resolver, real signatures.

Everything goes through the project's own commands (``qnprov push dkim rotate ... --json``,
``qnprov deploy --check --tags rspamd --json``). The new selector's record is published the way the lab
resolves its zone: unbound on the lab host (roles/resolver) answers it from local data,
added at run time with ``unbound-control local_data`` (the inventory's
``resolver_local_zones`` is not edited, so ``deploy --check`` still compares with the
lab's own inventory). Lookups in the test go to that unbound, inside the container.
A message submitted on the lab's submission port is fetched over IMAP and its signature
checked by dkimpy against the record the lab resolver serves.

The module leaves the lab signing with ``rspamd_dkim_selector`` again (a forced rotation
back to its key), so the other suites find the selector they expect.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import json
import re
import smtplib
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import dkim as dkimpy
import dns.message
import dns.rdatatype
import pytest
import yaml
from labenv import date_header
from labenv import require_env as _env

from qnprov import dns as qdns
from qnprov import inventory, lab, paths
from qnprov.push import dkimkeys as rotation
from qnprov_testing.cli import fetch_and_delete, qnprov_json

pytestmark = [pytest.mark.lab]

DOMAIN = "quangninh.test"
DKIM_DIR = "/var/lib/rspamd/dkim"
SIGNING = ["/etc/rspamd/local.d/dkim_signing.conf", "/etc/rspamd/local.d/arc.conf"]
STATE = f"{DKIM_DIR}/qnprov-dkim.json"
ORIGINAL = yaml.safe_load((paths.ROLES_DIR / "rspamd" / "defaults" / "main.yml").read_text())["rspamd_dkim_selector"]
DEPLOY_TIMEOUT = 1800
TIMEOUT = 30.0
_QUERY = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5);"
          "s.sendto(sys.stdin.buffer.read(),('127.0.0.1',53));sys.stdout.buffer.write(s.recv(65535))")


@pytest.fixture(scope="module")
def lab_inventory() -> Path:
    return lab.load_lab_config().inventory


@pytest.fixture(scope="module")
def containers(lab_inventory: Path) -> dict[str, str]:
    """Every MTA of the lab inventory and its container."""
    inv = inventory.load(lab_inventory)
    found = {host: str(inv.host_vars(host)["qnprov_lab_container"]) for host in inv.hosts_matching("mta")}
    assert found and _env("QNPROV_TEST_HOST") in found.values()
    return found


def _qnprov(*argv: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc, doc = qnprov_json(*argv, timeout=timeout, empty_ok=True)
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    return proc, doc


def _exec(container: str, *argv: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["podman", "exec", "-i", container, *argv], input=data, capture_output=True,
                          check=False, timeout=120)
    assert done.returncode == 0, f"{argv}: {done.stderr.decode()[-500:]}"
    return done.stdout


def _sha(container: str, *paths_: str) -> dict[str, str]:
    lines = _exec(container, "sh", "-c", " ".join(f"sha256sum {p} 2>/dev/null || echo missing {p};"
                                                  for p in paths_)).decode().splitlines()
    return {line.split()[1]: line.split()[0] for line in lines}


def _unbound(container: str, *argv: str) -> None:
    out = _exec(container, "unbound-control", "-c", "/etc/unbound/unbound.conf", *argv).decode()
    assert out.strip() == "ok", out


def _publish(container: str, name: str, value: str) -> None:
    """The record in the lab resolver's local data (strings of at most 255 octets)."""
    strings = " ".join(f'"{chunk}"' for chunk in qdns.txt_chunks(value))
    _unbound(container, "local_data", f"{name} 3600 IN TXT {strings}")


def _unpublish(container: str, name: str) -> None:
    _unbound(container, "local_data_remove", name)


def _lab_txt(container: str, name: str) -> list[str]:
    """TXT values of ``name`` as the lab's unbound answers them (strings joined)."""
    query = dns.message.make_query(name, "TXT")
    reply = dns.message.from_wire(_exec(container, "python3", "-c", _QUERY, data=query.to_wire()))
    return ["".join(s.decode() for s in rdata.strings) for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.TXT for rdata in rrset]


@pytest.fixture(scope="module")
def restore_original_selector(lab_inventory: Path, containers: dict[str, str]) -> Iterator[None]:
    yield
    first = next(iter(containers.values()))
    for name in _exec(first, "unbound-control", "-c", "/etc/unbound/unbound.conf", "list_local_data").decode() \
            .splitlines():
        if "._domainkey." in name:
            _unpublish(first, name.split()[0])
    active = json.loads(_exec(first, "sh", "-c", f"cat {STATE} 2>/dev/null || echo '{{}}'") or b"{}")
    if (active.get("domains", {}).get(DOMAIN) or {}).get("active") in (None, ORIGINAL):
        return  # never switched (a refused test): a pending selector does not sign
    proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN,
                        "--selector", ORIGINAL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN, "--activate",
                        "--force")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert doc["dkim"]["selector"] == ORIGINAL


def test_a_key_that_does_not_match_its_published_record_is_refused_before_any_change(
        lab_inventory: Path, containers: dict[str, str], restore_original_selector: None) -> None:
    first = next(iter(containers.values()))
    selector = f"m{uuid.uuid4().hex[:8]}"
    name = rotation.record_name(DOMAIN, selector)
    stranger = rotation.public_b64(rotation.generate_key(2048))
    watched = [*SIGNING, STATE, f"{DKIM_DIR}/{DOMAIN}.{selector}.key"]
    before = {c: _sha(c, *watched) for c in containers.values()}
    _publish(first, name, f"v=DKIM1; k=rsa; p={stranger}")
    try:
        # phase 1: the selector's record already carries another key
        proc, _ = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN,
                          "--selector", selector)
        assert proc.returncode == 2, proc.stderr
        assert f"DKIM key of selector {selector} ({DOMAIN}) does not match its published record: {name}" \
            in proc.stderr, proc.stderr
        assert {c: _sha(c, *watched) for c in containers.values()} == before
        # phase 1 without that record, then phase 2 with it back: refused, even with --force
        _unpublish(first, name)
        proc, _ = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN,
                          "--selector", selector)
        assert proc.returncode == 0, proc.stderr
        _publish(first, name, f"v=DKIM1; k=rsa; p={stranger}")
        pending = {c: _sha(c, *watched) for c in containers.values()}
        for extra in ((), ("--force",)):
            proc, _ = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN,
                              "--activate", *extra)
            assert proc.returncode == 2, proc.stderr
            assert "does not match its published record" in proc.stderr and name in proc.stderr
            assert {c: _sha(c, *watched) for c in containers.values()} == pending
        assert all(pending[c][p] == before[c][p] for c in containers.values() for p in SIGNING)
    finally:
        _unpublish(first, name)


@pytest.mark.mailflow
def test_rotation_publish_activate_sign_and_deploy_agrees(
        lab_inventory: Path, containers: dict[str, str], restore_original_selector: None) -> None:
    first = next(iter(containers.values()))
    selector = f"r{uuid.uuid4().hex[:8]}"
    name = rotation.record_name(DOMAIN, selector)
    key_path = f"{DKIM_DIR}/{DOMAIN}.{selector}.key"
    signing_before = {c: _sha(c, *SIGNING) for c in containers.values()}

    # Phase 1: the same key on every MTA, the record to publish, signing untouched.
    started = time.monotonic()
    proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN,
                        "--selector", selector)
    phase1 = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert doc["summary"] == {"changed": sorted(containers), "unchanged": [], "failed": []}
    assert (doc["dkim"]["selector"], doc["dkim"]["phase"]) == (selector, "prepare")
    assert re.fullmatch(r"\(secret, \d+ bytes, sha256 [0-9a-f]{12}\)", doc["dkim"]["key"]), doc["dkim"]["key"]
    [record] = doc["dkim"]["records"]
    assert (record["name"], record["type"]) == (name, "TXT")
    public = rotation.txt_public_key(record["value"])
    keys = {c: _exec(c, "stat", "-c", "%U:%G:%a", key_path).decode().strip() + " "
            + _sha(c, key_path)[key_path] for c in containers.values()}
    assert len(set(keys.values())) == 1, keys  # the same key, owner and mode on every MTA
    assert next(iter(keys.values())).startswith("_rspamd:_rspamd:600 ")
    for container in containers.values():
        derived = base64.b64encode(_exec(container, "openssl", "pkey", "-in", key_path, "-pubout", "-outform", "DER"))
        assert derived.decode() == public  # the printed record carries this key
        assert _sha(container, *SIGNING) == signing_before[container]
    assert f"{selector}" not in _exec(first, "cat", *SIGNING).decode()
    # A rerun finishes the same rotation: nothing to do.
    proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN)
    assert proc.returncode == 0 and doc["summary"]["unchanged"] == sorted(containers), doc
    assert doc["dkim"]["selector"] == selector

    # Phase 2 before the record is published: refused, nothing changes.
    proc, _ = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN, "--activate")
    assert proc.returncode == 2, proc.stderr
    assert f"selector {selector} of {DOMAIN} is not published yet: {name} TXT" in proc.stderr, proc.stderr
    assert "NXDOMAIN" in proc.stderr or "no TXT record" in proc.stderr
    assert all(_sha(c, *SIGNING) == signing_before[c] for c in containers.values())

    # Publish in the lab resolver; it answers the record with the key.
    _publish(first, name, record["value"])
    try:
        assert _lab_txt(first, name) == [record["value"]]
        started = time.monotonic()
        proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN, "--activate")
        phase2 = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert doc["summary"]["changed"] == sorted(containers) and not doc["summary"]["failed"]
        assert all(h["action"] == "reload" and sorted(h["changed_files"]) == sorted([*SIGNING, STATE])
                   for h in doc["hosts"].values()), doc["hosts"]
        assert (doc["dkim"]["selector"], doc["dkim"]["previous"]) == (selector, ORIGINAL)
        retiring = doc["dkim"]["retiring"][-1]  # earlier rotations of the lab may be listed before it
        assert retiring["selector"] == ORIGINAL
        days = (dt.datetime.fromisoformat(retiring["retire_after"])
                - dt.datetime.fromisoformat(retiring["since"])).days
        assert days == 7
        for container in containers.values():
            assert f'selector = "{selector}";' in _exec(container, "cat", SIGNING[0]).decode()
            assert _exec(container, "systemctl", "is-active", "rspamd").decode().strip() == "active"
            state = json.loads(_exec(container, "cat", STATE))
            assert state["domains"][DOMAIN]["active"] == selector and state["domains"][DOMAIN]["pending"] is None

        # Mail submitted now is signed with the new selector and verifies against the lab's record.
        raw = _send_and_fetch(f"push dkim {selector}")
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        signatures = parsed.get_all("DKIM-Signature") or []
        assert signatures, "the delivered message carries no DKIM-Signature"
        tags = dict(t.split("=", 1) for t in re.sub(r"\s+", "", signatures[0]).split(";") if "=" in t)
        assert (tags["d"], tags["s"]) == (DOMAIN, selector)
        asked: list[str] = []

        def lab_dns(qname: bytes, timeout: int = 5) -> bytes | None:
            asked.append(qname.decode())
            found = _lab_txt(first, qname.decode())
            return found[0].encode() if found else None

        assert dkimpy.verify(raw, dnsfunc=lab_dns), "the signature does not verify against the lab's record"
        assert asked == [name]

        # Ansible finds the host converged: the rspamd role (the only one that writes DKIM
        # files) reads the selector from the host's state and would change nothing. The
        # whole site's check-mode run is test_push_lab's.
        started = time.monotonic()
        proc, deploy = _qnprov("deploy", "-i", str(lab_inventory), "--check", "--tags", "rspamd",
                               timeout=DEPLOY_TIMEOUT)
        check_seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr[-2000:]
        changed = {entry["task"] for entry in deploy["changed_tasks"]}
        assert changed == set(), changed
        assert all(deploy["hosts"][h]["changed"] == 0 for h in containers)
        assert all(deploy["hosts"][h]["ok"] >= 20 for h in containers)  # the role ran (47 tasks on the lab)
        # And a second --activate is no change.
        proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN, "--activate")
        assert proc.returncode == 0 and doc["summary"]["unchanged"] == sorted(containers), doc
        print(f"push dkim rotate: phase 1 {phase1:.1f}s, phase 2 {phase2:.1f}s; deploy --check {check_seconds:.1f}s")
    finally:
        _unpublish(first, name)


def _send_and_fetch(subject: str) -> bytes:
    accounts = json.loads(_env("QNPROV_TEST_ACCOUNTS"))
    (sender, password), (recipient, recipient_password) = [(a["address"], a["password"]) for a in accounts[:2]]
    endpoints = json.loads(_env("QNPROV_TEST_ENDPOINTS"))
    context = ssl.create_default_context(cafile=_env("QNPROV_TEST_CA"))
    context.check_hostname = False  # loopback port forwards; the chain is still verified
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, recipient, subject
    message["Date"], message["Message-ID"] = date_header(), make_msgid(domain=DOMAIN)
    message.set_content("DKIM rotation check.\n")
    host, _, port = str(endpoints["submission"]).rpartition(":")
    with smtplib.SMTP(host or "127.0.0.1", int(port), timeout=TIMEOUT) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, password)
        smtp.send_message(message)
    host, _, port = str(endpoints["imaps"]).rpartition(":")
    return fetch_and_delete(host or "127.0.0.1", int(port), context, recipient, recipient_password, subject,
                            timeout=TIMEOUT)


def test_a_signing_file_rspamd_refuses_is_never_published(
        lab_inventory: Path, containers: dict[str, str], restore_original_selector: None) -> None:
    """A live tree that no longer passes configtest: the candidates are refused, every file stays."""
    first = next(iter(containers.values()))
    selector = f"f{uuid.uuid4().hex[:8]}"
    name = rotation.record_name(DOMAIN, selector)
    proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN,
                        "--selector", selector)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _publish(first, name, doc["dkim"]["records"][0]["value"])
    broken = "/etc/rspamd/local.d/phishing.conf"
    saved = _exec(first, "cat", broken)
    before = _sha(first, *SIGNING, STATE)
    pid = _exec(first, "systemctl", "show", "-p", "MainPID", "--value", "rspamd").decode().strip()
    _exec(first, "sh", "-c", f"cp -a {broken} {broken}.test-saved && printf 'enabled = {{{{ broken\\n' >> {broken}")
    try:
        proc, doc = _qnprov("push", "dkim", "rotate", "-i", str(lab_inventory), "--domain", DOMAIN, "--activate")
        assert proc.returncode == 1, proc.stderr[-2000:]
        host = doc["hosts"][next(iter(containers))]
        assert host["status"] == "failed" and "rspamd configtest refused the new local.d/dkim_signing.conf" \
            in host["message"], host
        assert _sha(first, *SIGNING, STATE) == before  # signing files and the pending state untouched
        assert "qnprov-new" not in _exec(first, "ls", "-a", "/etc/rspamd/local.d").decode()
        assert _exec(first, "systemctl", "show", "-p", "MainPID", "--value", "rspamd").decode().strip() == pid
    finally:
        _exec(first, "sh", "-c", f"mv -f {broken}.test-saved {broken}")
        _unpublish(first, name)
    assert _exec(first, "cat", broken) == saved
