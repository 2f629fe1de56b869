"""The rspamd and os_hardening roles, checked on a converged host.

Service state and configuration are read inside the container through
testinfra's podman backend. Messages are handed to the real rspamd scanner
with rspamc inside the container (the sending address is message metadata
only; no packet goes anywhere). Firewall reachability is probed from this
process to the container's published loopback ports: that traffic enters
the container from the podman bridge, i.e. through the nftables input chain.

Environment (set by tests/integration/conftest.py from ``qnprov lab up``, or
by molecule's verify step):
  QNPROV_TEST_HOST    container name
  QNPROV_TEST_DOMAIN  a hosted mail domain (gets a DKIM key)
A missing variable fails the test: a check that did not run must not look
like one that passed.

Control IDs: RSPAMD-* for the rspamd role, OS-* for os_hardening.
"""

from __future__ import annotations

import base64
import configparser
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

import dkim
import pytest
import testinfra
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from labenv import require_env as _require_env

from qnprov import paths

pytestmark = pytest.mark.lab

# A TEST-NET-1 address (RFC 5737): "outside" as far as rspamd's local_addrs
# and Postfix's mynetworks are concerned. It is only passed to rspamc as the
# client address of a message; nothing is ever sent to it.
OUTSIDE_CLIENT_IP = "192.0.2.25"
CONNECT_TIMEOUT = 3.0
JOURNAL_DEADLINE = 15.0  # seconds for a journal line or a Redis write to show


def _role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((paths.ROLES_DIR / role / "defaults" / "main.yml").read_text())


RSPAMD = _role_defaults("rspamd")
#: redis-cli with the password the role put in redis.conf (read on the host, never printed).
REDIS_CLI = "REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/redis/redis.conf)\" redis-cli"
OS = _role_defaults("os_hardening")
WEBMAIL = _role_defaults("webmail")
SELECTOR = RSPAMD["rspamd_dkim_selector"]
ALLOWED_TCP = sorted(OS["os_hardening_nftables_allowed_tcp_ports"])




@pytest.fixture(scope="module")
def container() -> str:
    return _require_env("QNPROV_TEST_HOST")


@pytest.fixture(scope="module")
def domain() -> str:
    return _require_env("QNPROV_TEST_DOMAIN")


@pytest.fixture(scope="module")
def host(container: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{container}")


def _ok(host: testinfra.host.Host, command: str, *args: str) -> str:
    result = host.run(command, *args)
    assert result.rc == 0, f"{command % args if args else command} failed ({result.rc}): {result.stderr}"
    return str(result.stdout)


# --- rspamd ----------------------------------------------------------------


def _message(sender: str, recipient: str, subject: str) -> bytes:
    headers = [
        f"From: Test Sender <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(datetime.now(UTC))}",
        f"Message-ID: {make_msgid(domain=sender.rpartition('@')[2])}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    body = "Kính gửi các đồng chí,\r\nThis is a DKIM test message.\r\n"
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def _scan(container: str, message: bytes, *, sender: str, recipient: str, client_ip: str,
          user: str | None = None) -> dict[str, Any]:
    """Scan with the real rspamd worker; the reply carries the milter actions."""
    argv = ["podman", "exec", "-i", container, "rspamc", "-h", RSPAMD["rspamd_normal_bind"], "-j",
            "-F", sender, "-r", recipient, "-i", client_ip, "--helo", "client.example.org"]
    if user:
        argv += ["-u", user]
    proc = subprocess.run(argv, input=message, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, f"rspamc failed ({proc.returncode}): {proc.stderr.decode()[-500:]}"
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


def _added_headers(reply: dict[str, Any]) -> dict[str, str]:
    added = (reply.get("milter") or {}).get("add_headers") or {}
    headers: dict[str, str] = {}
    for name, spec in added.items():
        headers[name] = spec["value"] if isinstance(spec, dict) else str(spec)
    return headers


def _dns_record(host: testinfra.host.Host, domain: str) -> str:
    text = host.file(f"{RSPAMD['rspamd_dkim_dir']}/{domain}.{SELECTOR}.txt").content_string
    assert text.startswith(f"{SELECTOR}._domainkey IN TXT"), text[:80]
    return "".join(re.findall(r'"([^"]*)"', text))


@pytest.mark.parametrize("service", ["rspamd", "redis-server"])
def test_rspamd_services_run_and_start_at_boot(host: testinfra.host.Host, service: str) -> None:
    unit = host.service(service)
    assert unit.is_running, f"{service} is not running"
    assert unit.is_enabled, f"{service} is not enabled"


def test_rspamd_configuration_passes_strict_configtest(host: testinfra.host.Host) -> None:
    """RSPAMD-01: the live tree is valid, even with -s (stop on any error)."""
    assert "syntax OK" in _ok(host, "rspamadm configtest -s")


def test_rspamd_and_redis_listen_on_loopback_only(host: testinfra.host.Host) -> None:
    """RSPAMD-02: milter, scanner, controller and Redis are not reachable from outside."""
    listening: dict[int, set[str]] = {}
    for line in _ok(host, "ss -Hltn").splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        listening.setdefault(int(port), set()).add(address)
    milter_host, _, milter_port = RSPAMD["rspamd_milter_bind"].rpartition(":")
    assert listening.get(int(milter_port)) == {milter_host}, listening.get(int(milter_port))
    for bind in (RSPAMD["rspamd_normal_bind"], RSPAMD["rspamd_controller_bind"]):
        address, _, port = bind.rpartition(":")
        assert listening.get(int(port)) == {address}, (bind, listening.get(int(port)))
    redis_tcp = [line for line in _ok(host, "ss -Hltnp").splitlines() if '"redis-server"' in line]
    assert redis_tcp == [], f"Redis listens on TCP: {redis_tcp}"


def test_redis_is_reachable_only_through_its_group_socket(host: testinfra.host.Host, container: str,
                                                          domain: str) -> None:
    """RSPAMD-09: no TCP, protected mode, socket 0770 for the redis group, which _rspamd joins."""
    socket_path = RSPAMD["rspamd_redis_unixsocket"]
    # Without the password Redis answers nothing but NOAUTH.
    assert "NOAUTH" in host.run("redis-cli -s %s ping", socket_path).stdout
    assert _ok(host, f"{REDIS_CLI} -s %s config get protected-mode", socket_path).split() == ["protected-mode", "yes"]
    assert _ok(host, f"{REDIS_CLI} -s %s config get port", socket_path).split() == ["port", "0"]
    sock = host.file(socket_path)
    assert sock.is_socket
    assert sock.mode == 0o770
    assert sock.group == "redis"
    assert "redis" in host.user("_rspamd").groups
    # rspamd really uses it: the history of a scan lands in this Redis.
    _scan(container, _message("sender@example.org", f"binhtt@{domain}", "history"), sender="sender@example.org",
          recipient=f"binhtt@{domain}", client_ip=OUTSIDE_CLIENT_IP)
    deadline = time.monotonic() + JOURNAL_DEADLINE
    while not _ok(host, f"{REDIS_CLI} -s %s --scan --pattern %s", socket_path, "rs_history*").strip():
        assert time.monotonic() < deadline, "rspamd wrote no scan history to Redis"
        time.sleep(0.5)


def test_dkim_key_is_private_and_at_least_2048_bits(host: testinfra.host.Host, domain: str) -> None:
    """RSPAMD-03 / controls.md DKIM: key >= 2048 bits, mode 0600, owned by _rspamd."""
    key = host.file(f"{RSPAMD['rspamd_dkim_dir']}/{domain}.{SELECTOR}.key")
    assert key.is_file
    assert key.user == "_rspamd"
    assert key.mode == 0o600
    tags = dict(part.strip().split("=", 1) for part in _dns_record(host, domain).split(";") if part.strip())
    assert tags["v"] == "DKIM1"
    assert tags["k"] == "rsa"
    public_key = load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size >= 2048


def test_authenticated_mail_is_signed_and_the_signature_verifies(
        host: testinfra.host.Host, container: str, domain: str) -> None:
    """RSPAMD-04: submission mail gets a DKIM signature that verifies against the published record."""
    sender = f"annv@{domain}"
    message = _message(sender, "someone@example.org", "DKIM signing check")
    reply = _scan(container, message, sender=sender, recipient="someone@example.org",
                  client_ip=OUTSIDE_CLIENT_IP, user=sender)
    assert "DKIM_SIGNED" in reply["symbols"], sorted(reply["symbols"])
    # rspamd hands the signature to the MTA in its own reply field; the milter
    # proxy turns it into a header.
    signature = reply.get("dkim-signature")
    assert isinstance(signature, str) and signature, f"no DKIM signature in the reply: {sorted(reply)}"
    tags = {k.strip(): v.strip() for k, v in (t.split("=", 1) for t in re.sub(r"\s+", "", signature).split(";") if t)}
    assert tags["d"] == domain
    assert tags["s"] == SELECTOR
    record = _dns_record(host, domain).encode()

    def published_record(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == f"{SELECTOR}._domainkey.{domain}"
        return record

    signed = b"DKIM-Signature: " + signature.encode() + b"\r\n" + message
    assert dkim.verify(signed, dnsfunc=published_record), "the DKIM signature does not verify"
    assert not dkim.verify(signed.replace(b"DKIM test message", b"DKIM test massage"), dnsfunc=published_record)


def test_unauthenticated_mail_from_outside_is_not_signed(container: str, domain: str) -> None:
    """RSPAMD-05: a stranger using our domain in From: gets no signature."""
    sender = f"annv@{domain}"
    reply = _scan(container, _message(sender, f"binhtt@{domain}", "spoof"), sender=sender,
                  recipient=f"binhtt@{domain}", client_ip=OUTSIDE_CLIENT_IP)
    assert "DKIM_SIGNED" not in reply["symbols"]
    assert "dkim-signature" not in reply


def test_inbound_mail_is_checked_and_arc_sealed(container: str, domain: str) -> None:
    """RSPAMD-06: SPF, DKIM, DMARC results in Authentication-Results; ARC seal by our domain."""
    reply = _scan(container, _message("sender@example.org", f"binhtt@{domain}", "inbound"),
                  sender="sender@example.org", recipient=f"binhtt@{domain}", client_ip=OUTSIDE_CLIENT_IP)
    symbols = set(reply["symbols"])
    assert any(s.startswith("R_SPF_") for s in symbols), sorted(symbols)
    assert any(s.startswith("R_DKIM_") for s in symbols), sorted(symbols)
    assert any(s.startswith("DMARC_") for s in symbols), sorted(symbols)
    assert any(s.startswith("ARC_") for s in symbols), sorted(symbols)
    headers = _added_headers(reply)
    results = headers.get("Authentication-Results", "")
    for method in ("spf=", "dkim=", "dmarc="):
        assert method in results, results
    seal = re.sub(r"\s+", "", headers.get("ARC-Seal", ""))
    assert f"d={domain};" in seal and f"s={SELECTOR};" in seal, headers.get("ARC-Seal")


@pytest.mark.parametrize("module", ["fuzzy_check", "rbl", "asn", "url_redirector", "whitelist"])
def test_third_party_lookups_are_off(host: testinfra.host.Host, module: str) -> None:
    """RSPAMD-07: no message data, hash or address leaves the host by default."""
    dump = _ok(host, "rspamadm configdump %s", module)
    assert re.search(r"^enabled = false;$", dump, re.MULTILINE), dump[:400]


def test_phishing_feeds_are_off(host: testinfra.host.Host) -> None:
    dump = _ok(host, "rspamadm configdump phishing")
    assert "openphish_enabled = false;" in dump
    assert "phishtank_enabled = false;" in dump


def test_controller_demands_the_password(host: testinfra.host.Host) -> None:
    """RSPAMD-08: loopback is not trusted by itself; the generated password works."""
    anonymous = host.run("rspamc -h %s stat", RSPAMD["rspamd_controller_bind"])
    assert "401" in anonymous.stdout + anonymous.stderr, anonymous.stdout
    password_file = host.file(RSPAMD["rspamd_controller_password_file"])
    assert password_file.user == "root"
    assert password_file.mode == 0o600
    authorised = _ok(host, 'rspamc -h %s -P "$(cat %s)" stat', RSPAMD["rspamd_controller_bind"],
                     RSPAMD["rspamd_controller_password_file"])
    assert "Messages scanned:" in authorised


# --- os_hardening ------------------------------------------------------------


def test_sshd_runs_with_the_hardened_settings(host: testinfra.host.Host) -> None:
    """OS-SSH-01..06 (dev-sec ssh-baseline)."""
    assert host.service("ssh").is_running
    effective = dict(line.split(" ", 1) for line in _ok(host, "sshd -T").splitlines() if " " in line)
    expected = {
        "passwordauthentication": "no",
        "permitrootlogin": "without-password",  # sshd -T spells prohibit-password like this
        "permitemptypasswords": "no",
        "kbdinteractiveauthentication": "no",
        "x11forwarding": "no",
        "allowtcpforwarding": "no",
        "allowagentforwarding": "no",
        "permituserenvironment": "no",
        "maxauthtries": "3",
        "loglevel": "VERBOSE",
    }
    assert {k: effective.get(k) for k in expected} == expected
    assert effective["kexalgorithms"].split(",") == OS["os_hardening_ssh_kex_algorithms"]
    assert effective["ciphers"].split(",") == OS["os_hardening_ssh_ciphers"]
    assert effective["macs"].split(",") == OS["os_hardening_ssh_macs"]
    for weak in ("cbc", "sha1", "md5", "3des"):
        assert weak not in effective["ciphers"] + effective["macs"] + effective["kexalgorithms"]


def _nft(host: testinfra.host.Host, *args: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(_ok(host, "nft -j " + " ".join(["%s"] * len(args)), *args))[
        "nftables"]
    return entries


def _allowed_tcp_ports(host: testinfra.host.Host) -> list[int]:
    for entry in _nft(host, "list", "set", "inet", "qnprov_filter", "allowed_tcp"):
        if "set" in entry:
            return sorted(int(e) for e in entry["set"].get("elem", []))
    raise AssertionError("set inet qnprov_filter allowed_tcp not found")


def test_nftables_drops_inbound_by_default(host: testinfra.host.Host) -> None:
    """OS-FW-01: default-drop input, nothing forwarded, the allowlist as configured."""
    assert host.service("nftables").is_enabled
    chains = {e["chain"]["name"]: e["chain"] for e in _nft(host, "list", "table", "inet", "qnprov_filter")
              if "chain" in e}
    assert chains["input"]["hook"] == "input" and chains["input"]["policy"] == "drop"
    assert chains["forward"]["policy"] == "drop"
    assert _allowed_tcp_ports(host) == ALLOWED_TCP


def _published_listeners(host: testinfra.host.Host, container: str) -> list[tuple[int, int]]:
    """(container port, host loopback port) for allowlisted ports with a listener inside."""
    mapping = subprocess.run(["podman", "port", container], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    listening = {int(line.split()[3].rpartition(":")[2]) for line in _ok(host, "ss -Hltn").splitlines()}
    pairs = []
    for line in mapping.splitlines():
        match = re.match(r"^(\d+)/tcp -> 127\.0\.0\.1:(\d+)$", line.strip())
        if match and int(match[1]) in ALLOWED_TCP and int(match[1]) in listening:
            pairs.append((int(match[1]), int(match[2])))
    if not pairs:
        pytest.fail(f"{container} publishes no allowlisted port with a listener on 127.0.0.1 "
                    f"(podman port: {mapping.strip() or 'none'})", pytrace=False)
    # Quietest first (sshd, then managesieve ...): the drop test briefly takes
    # the first one off the allowlist, and port 25 is what other suites use most.
    quiet_order = [OS["os_hardening_ssh_port"], 4190, 143, 636, 993, 465, 587, 25]
    return sorted(pairs, key=lambda pair: (quiet_order.index(pair[0]) if pair[0] in quiet_order else 99, pair[0]))


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT):
            return True
    except (TimeoutError, ConnectionRefusedError, ConnectionResetError):
        return False


def test_published_ports_still_reach_their_services(host: testinfra.host.Host, container: str) -> None:
    """OS-FW-02: the ruleset lets published-port traffic (from the podman bridge) through."""
    unreachable = [pair for pair in _published_listeners(host, container) if not _connects(pair[1])]
    assert unreachable == [], f"allowlisted, published, listening but unreachable: {unreachable}"


@contextmanager
def _port_removed_from_allowlist(host: testinfra.host.Host, port: int) -> Iterator[None]:
    _ok(host, "nft delete element inet qnprov_filter allowed_tcp { %s }", str(port))
    try:
        yield
    finally:
        _ok(host, "nft add element inet qnprov_filter allowed_tcp { %s }", str(port))
        assert _allowed_tcp_ports(host) == ALLOWED_TCP


def test_a_port_off_the_allowlist_is_dropped(host: testinfra.host.Host, container: str) -> None:
    """OS-FW-03: the input policy really drops: take one listening port off the allowlist for a moment.

    The port goes back in a finally block; the quietest published port is
    chosen so that other suites' traffic is unlikely to meet the short gap.
    """
    container_port, host_port = _published_listeners(host, container)[0]
    assert _connects(host_port), f"port {container_port} is not reachable before the test"
    with _port_removed_from_allowlist(host, container_port):
        assert not _connects(host_port), f"port {container_port} answered although it is off the allowlist"
    assert _connects(host_port)


def test_fail2ban_runs_the_mail_jails_on_the_journal(host: testinfra.host.Host) -> None:
    """OS-F2B-01: jails sshd, postfix (mode=more), postfix-sasl, dovecot, sieve; backend systemd.
    A host that serves the webmail (roles/webmail) runs its qnprov-webmail jail as well."""
    assert host.service("fail2ban").is_running
    status = _ok(host, "fail2ban-client status")
    jails = re.search(r"Jail list:\s*(.*)$", status, re.MULTILINE)
    assert jails is not None, status
    expected = list(OS["os_hardening_fail2ban_jails"])
    if host.package("roundcube-core").is_installed and WEBMAIL["webmail_fail2ban_enabled"]:
        expected.append("qnprov-webmail")
    assert sorted(j.strip() for j in jails[1].split(",")) == sorted(expected)
    for jail in expected:
        # "Journal matches" appears only for jails on the systemd backend.
        assert "Journal matches:" in _ok(host, "fail2ban-client status %s", jail), jail
    local = configparser.ConfigParser(interpolation=None)
    local.read_string(host.file("/etc/fail2ban/jail.local").content_string)
    assert local["postfix"]["mode"] == "more"
    assert "postfix@-.service" in _ok(host, "fail2ban-client get postfix-sasl journalmatch")


def _own_address(host: testinfra.host.Host) -> str:
    for line in _ok(host, "ip -4 -o addr show scope global").splitlines():
        return line.split()[3].split("/")[0]
    raise AssertionError("the container has no global IPv4 address")


def test_sshd_failures_in_the_journal_match_the_sshd_jail(host: testinfra.host.Host) -> None:
    """OS-F2B-02: Debian's sshd journal entries reach fail2ban's sshd filter (backend systemd).

    The container logs in to its own bridge address with a user name unique to
    this run; the traffic never leaves the container. fail2ban itself would
    not ban that source (ignoreself), so the filter is run over the journal
    with fail2ban-regex, the same filter and journal match the jail uses.
    """
    user = f"qnprov-f2b-{uuid.uuid4().hex[:10]}"
    address = _own_address(host)
    for _ in range(2):
        host.run("timeout 5 ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                 "-o PreferredAuthentications=publickey -p %s %s@%s true",
                 str(OS["os_hardening_ssh_port"]), user, address)
    deadline = time.monotonic() + JOURNAL_DEADLINE
    while True:
        matched = _ok(host, "fail2ban-regex --print-all-matched systemd-journal sshd")
        hits = [line for line in matched.splitlines() if f"Invalid user {user} from {address}" in line]
        if len(hits) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(hits) >= 2, f"the sshd filter did not match the failed logins of {user}"


def test_a_ban_lands_in_nftables(host: testinfra.host.Host) -> None:
    """OS-F2B-03: the ban action (nftables-multiport) works inside the host's netns."""
    jail_address = "192.0.2.77"  # TEST-NET-1: banned only on paper, never contacted
    port = str(OS["os_hardening_ssh_port"])
    try:
        _ok(host, "fail2ban-client set sshd banip %s", jail_address)
        ruleset = _ok(host, "nft list table inet f2b-table")
        assert jail_address in ruleset and f"tcp dport {port}" in ruleset, ruleset
    finally:
        host.run("fail2ban-client set sshd unbanip %s", jail_address)
    assert jail_address not in _ok(host, "nft list table inet f2b-table")


def test_unattended_upgrades_take_security_updates_only(host: testinfra.host.Host) -> None:
    """OS-UPD-01: daily runs, Debian-Security origins only."""
    periodic = _ok(host, "apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    origins = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.*)";$',
                         _ok(host, "apt-config dump Unattended-Upgrade::Origins-Pattern"), re.MULTILINE)
    assert origins, "no origins configured"
    assert all("label=Debian-Security" in origin for origin in origins), origins


def test_apt_timers_are_held_in_the_lab(host: testinfra.host.Host) -> None:
    """The lab (and molecule, which uses its group_vars) holds the daily apt timers.

    unattended-upgrades stays installed and configured (above) and runs in every deploy;
    only the timers that would upgrade and restart services mid-test are held. Production
    keeps them on (tests/unit/test_apt_timers.py checks the defaults).
    """
    lab_vars = yaml.safe_load((paths.INVENTORIES_DIR / "lab" / "group_vars" / "all" / "main.yml").read_text())
    assert lab_vars["os_hardening_unattended_upgrades_timers_enabled"] is False
    assert OS["os_hardening_unattended_upgrades_timers_enabled"] is True
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        enabled = host.run("systemctl is-enabled %s", timer).stdout.strip()
        active = host.run("systemctl is-active %s", timer).stdout.strip()
        assert (enabled, active) == ("disabled", "inactive"), (timer, enabled, active)
    for service in ("apt-daily.service", "apt-daily-upgrade.service"):
        assert host.run("systemctl is-active %s", service).stdout.strip() == "inactive", service


def test_sysctl_file_records_every_setting(host: testinfra.host.Host) -> None:
    """OS-SYS-01: the file is there on every host; applied where the kernel allows."""
    content = host.file(OS["os_hardening_sysctl_file"]).content_string
    for name, value in OS["os_hardening_sysctl_settings"].items():
        assert f"\n{name} = {value}\n" in f"\n{content}", name


def test_login_defs_core_dumps_and_banner(host: testinfra.host.Host) -> None:
    """OS-LYN-01..03: umask 027, no core dumps, a legal banner before SSH login."""
    login_defs = host.file("/etc/login.defs").content_string
    assert re.search(rf"^UMASK\s+{OS['os_hardening_login_defs_umask']}$", login_defs, re.MULTILINE)
    limits = host.file("/etc/security/limits.d/90-qnprov-nocore.conf").content_string
    assert re.search(r"^\*\s+hard\s+core\s+0$", limits, re.MULTILINE)
    assert "Authorized use only" in host.file("/etc/issue.net").content_string
    assert "banner /etc/issue.net" in _ok(host, "sshd -T")
    # DebianBanner no: the identification string names no distribution patch level.
    greeting = _ok(host, "python3 -c %s", "import socket; print(socket.create_connection(('127.0.0.1', "
                   f"{OS['os_hardening_ssh_port']}), 5).recv(128).decode().strip())")
    assert greeting.startswith("SSH-2.0-OpenSSH_") and "Debian" not in greeting, greeting
