"""Dovecot sees the webmail's browser, not 127.0.0.1 (roles/webmail qnprov_clientip, issue 14).

Roundcube logs in to Dovecot over loopback. The qnprov_clientip plugin puts nginx's
REMOTE_ADDR into the IMAP ID (x-originating-ip), and roles/dovecot trusts loopback on a
webmail host, so Dovecot's log names the official's address and its auth penalty counts
per official's address. Before: every webmail login was rip=127.0.0.1, and one wrong
webmail password slowed everyone's next webmail login by seconds.

Two real client addresses, both through the real nginx, Roundcube and Dovecot:
  * B, this machine, through podman's published port: nginx sees the address the port
    forwarding gives the connection (read from Roundcube's own "Successful login ... from"
    line, which is REMOTE_ADDR);
  * A, inside the container, to the container's own eth0 address: nginx sees that address.
A spends the wrong password (and A's login allowance at nginx, not B's: the allowance is
per client address and the other lab tests log in as B). fail2ban never bans A (it is the
host's own address: ignoreself), so the filters' verdicts are read with fail2ban-regex.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import pytest
from labenv import require_env
from test_webmail_lab import Browser, _accounts

OFFICIAL_NAME = "mail1.quangninh.test"

# A Roundcube login from inside the container, to its eth0 address (so from it). Only the
# standard library of the container's python3; the lab CA the roles installed.
_INSIDE = r"""
import http.client, json, re, socket, ssl, sys, time, urllib.parse
address, ca, name, user, password = sys.argv[1:6]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.load_verify_locations(cafile=ca)
cookies = {}
def request(method, path, form=None):
    sock = socket.create_connection((address, 443), 60)
    conn = http.client.HTTPSConnection(name, 443, timeout=60, context=context)
    conn.sock = context.wrap_socket(sock, server_hostname=name)
    head = {"Host": name, "User-Agent": "qnprov-clientip-test"}
    if cookies:
        head["Cookie"] = "; ".join(k + "=" + v for k, v in cookies.items())
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        head["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=head)
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    for raw in response.headers.get_all("Set-Cookie") or []:
        key, _, rest = raw.partition("=")
        value = rest.split(";", 1)[0]
        if value in ("", "-del-", "deleted"):
            cookies.pop(key, None)
        else:
            cookies[key] = value
    conn.close()
    return response.status, text
status, page = request("GET", "/")
token = re.search(r'"request_token":"([^"]+)"', page) or re.search(r'name="_token" value="([^"]+)"', page)
form = {"_token": token.group(1), "_task": "login", "_action": "login", "_timezone": "Asia/Ho_Chi_Minh",
        "_url": "", "_user": user, "_pass": password}
start = time.monotonic()
status, _ = request("POST", "/?_task=login", form)
elapsed = time.monotonic() - start
print(json.dumps({"status": status, "seconds": elapsed, "logged_in": "qnwm_sessauth" in cookies}))
"""


def _exec(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["podman", "exec", "-i", require_env("QNPROV_TEST_HOST"), *argv], input=stdin,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-1000:]
    return proc.stdout


def _inside_login(address: str, user: str, password: str) -> dict:
    """A webmail login POST from the container's eth0 address; its status and duration."""
    return json.loads(_exec("python3", "-", address, "/etc/qnprov/tls/ca.pem", OFFICIAL_NAME, user, password,
                            stdin=_INSIDE))


def _outside_login(user: str, password: str) -> tuple[float, bool]:
    """A webmail login from this machine (through podman's port forwarding); its duration."""
    browser = Browser()
    browser.request("GET", "/")
    assert browser.token, "the login page carries no CSRF token"
    from qnprov_testing import roundcube

    start = time.monotonic()
    status, _, _ = browser.request("POST", "/?_task=login", roundcube.login_form(browser.token, user, password))
    elapsed = time.monotonic() - start
    logged_in = status == 302 and "qnwm_sessauth" in browser.cookies
    return elapsed, logged_in


def _fail2ban_verdicts(filter_name: str) -> dict[str, str]:
    """Each journal line fail2ban-regex reads with FILTER (its journalmatch), as "matched" or
    "ignored" (ignoreregex). fail2ban-regex, not the live jail: the live jails never count A,
    the container's own address (fail2ban's ignoreself), and ignoreip/ignoreself are not the
    filters' business anyway."""
    out = _exec("fail2ban-regex", "--print-all-matched", "--print-all-ignored", "systemd-journal", filter_name)
    verdicts: dict[str, str] = {}
    section = None
    for line in out.splitlines():
        if line.startswith("|- Matched line(s):"):
            section = "matched"
        elif line.startswith("|- Ignored line(s):"):
            section = "ignored"
        elif line.startswith("`-"):
            section = None
        elif section and line.startswith("|  "):
            verdicts[line[3:]] = section
    return verdicts


def _verdict(verdicts: dict[str, str], *parts: str) -> str:
    found = [verdict for line, verdict in verdicts.items() if all(part in line for part in parts)]
    assert len(found) == 1, (parts, found)
    return found[0]


_INSIDE_IMAP = r"""
import imaplib, ssl, sys
address, ca, name, user, password = sys.argv[1:6]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # connected by address; the chain is still verified against the lab CA
client = imaplib.IMAP4_SSL(address, 993, ssl_context=context)
try:
    client.login(user, password)
    print("accepted")
except imaplib.IMAP4.error:
    print("refused")
"""


def _journal(since: str, *match: str) -> str:
    return _exec("journalctl", "--no-pager", "-o", "cat", "--since", since, *match)


@pytest.fixture(scope="module")
def eth0() -> str:
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", _exec("ip", "-4", "-o", "addr", "show", "dev", "eth0"))
    assert found, "the container has no IPv4 address on eth0"
    return found.group(1)


def test_dovecot_logs_the_browsers_address_and_penalises_only_that_address(eth0: str) -> None:
    # A's account takes one wrong webmail password per run; Roundcube locks an account for a
    # minute after 3 failed logins (login_rate_limit), so A is not the account test_webmail_lab.py's
    # wrong-password test uses.
    account, other = _accounts()[2], _accounts()[1]
    since = _exec("date", "+%Y-%m-%d %H:%M:%S").strip()
    time.sleep(1.1)  # journalctl --since has one-second resolution

    # B (this machine), no failure anywhere before: the reference figure.
    baseline, ok = _outside_login(other["address"], other["password"])
    assert ok
    # A: one wrong password (Dovecot delays the failure itself, auth_failure_delay).
    wrong = _inside_login(eth0, account["address"], "sai-mat-khau-" + uuid.uuid4().hex[:8])
    assert wrong["status"] == 401 and not wrong["logged_in"], wrong
    # At once: B's correct login is not slowed by A's failure ...
    after_b, ok = _outside_login(other["address"], other["password"])
    assert ok
    # ... and A's own correct login is (Dovecot's penalty on A's address).
    after_a = _inside_login(eth0, account["address"], account["password"])
    assert after_a["status"] == 302 and after_a["logged_in"], after_a
    figures = {"b_baseline": round(baseline, 2), "a_wrong": round(wrong["seconds"], 2),
               "b_after_a_wrong": round(after_b, 2), "a_after_a_wrong": round(after_a["seconds"], 2)}
    print("webmail login seconds:", figures)

    # The addresses nginx saw: Roundcube logs REMOTE_ADDR with every successful login.
    time.sleep(1)
    roundcube = _journal(since, "SYSLOG_IDENTIFIER=roundcube")
    seen = {user: set(re.findall(rf"Successful login for {re.escape(user)} \(ID: \d+\) from (\S+) in session",
                                 roundcube)) for user in (account["address"], other["address"])}
    assert seen[account["address"]] == {eth0}, roundcube[-2000:]
    (outside,) = seen[other["address"]]
    assert outside != eth0 and not outside.startswith("127."), seen
    # Dovecot names the same addresses (rip=), having come in on loopback (lip=).
    dovecot = _journal(since, "_SYSTEMD_UNIT=dovecot.service")
    logins = re.findall(r"imap-login: Login: user=<([^>]+)>, method=\S+, rip=([^,]+), lip=([^,]+),", dovecot)
    assert (other["address"], outside, "127.0.0.1") in logins, dovecot[-2000:]
    assert (account["address"], eth0, "127.0.0.1") in logins, dovecot[-2000:]
    assert not [rip for _, rip, _ in logins if rip.startswith("127.")], logins
    failed = re.findall(r"imap-login: Disconnected.*\(auth failed, \d+ attempts.*\): user=<([^>]+)>, "
                        r"method=\S+, rip=([^,]+), lip=127\.0\.0\.1", dovecot)
    assert (account["address"], eth0) in failed, dovecot[-2000:]

    # The penalty is per client: B is as fast as before (well under Dovecot's 2 s penalty),
    # A waits the penalty out. Before the fix B waited too (4.9 s against 0.8 s p50).
    assert after_b < 2.0 and after_b < baseline + 1.0, figures
    assert after_a["seconds"] > after_b + 1.5 and after_a["seconds"] >= 2.0, figures

    # fail2ban counts that wrong webmail password once: the qnprov-webmail filter matches
    # Roundcube's line, the dovecot filter ignores Dovecot's line of the same failure (lip=
    # loopback: filter.d/dovecot.local of roles/webmail).
    (webmail_failure,) = re.findall(rf"Failed login for {re.escape(account['address'])} from {re.escape(eth0)} "
                                    r"in session (\S+) ", roundcube)
    (dovecot_failure,) = [session for user, rip, session in re.findall(
        r"\(auth failed, \d+ attempts[^)]*\): user=<([^>]+)>, method=\S+, rip=([^,]+), lip=127\.0\.0\.1, "
        r".*session=<([^>]+)>", dovecot) if (user, rip) == (account["address"], eth0)]
    # A wrong password straight over IMAPS from A (not through the webmail) is still the dovecot jail's.
    verdict = _exec("python3", "-", eth0, "/etc/qnprov/tls/ca.pem", OFFICIAL_NAME, account["address"],
                    "sai-mat-khau-" + uuid.uuid4().hex[:8], stdin=_INSIDE_IMAP).strip()
    assert verdict == "refused"
    time.sleep(1)
    (direct_failure,) = re.findall(
        rf"\(auth failed, \d+ attempts[^)]*\): user=<{re.escape(account['address'])}>, method=\S+, "
        rf"rip={re.escape(eth0)}, lip={re.escape(eth0)}, .*session=<([^>]+)>",
        _journal(since, "_SYSTEMD_UNIT=dovecot.service"))
    assert _verdict(_fail2ban_verdicts("qnprov-webmail"), f"in session {webmail_failure} ") == "matched"
    dovecot_verdicts = _fail2ban_verdicts("dovecot")
    assert _verdict(dovecot_verdicts, f"session=<{dovecot_failure}>") == "ignored"
    assert _verdict(dovecot_verdicts, f"session=<{direct_failure}>") == "matched"


def test_trusting_loopback_lets_no_other_address_log_in_without_tls() -> None:
    """login_trusted_networks also marks a connection secured (plaintext LOGIN without TLS). It is
    loopback only, where Dovecot already counted the connection secured (remote address equals the
    local one; checked on the lab with login_trusted_networks empty: plaintext LOGIN worked from
    127.0.0.1 then too). From this machine, through podman's port forwarding (another address),
    the plain IMAP port still disables LOGIN before STARTTLS."""
    import imaplib

    host, port = json.loads(require_env("QNPROV_TEST_ENDPOINTS"))["imap"].rpartition(":")[::2]
    client = imaplib.IMAP4(host, int(port))
    try:
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities, client.capabilities
        assert not [c for c in client.capabilities if c.startswith("AUTH=")], client.capabilities
    finally:
        client.logout()
    trusted = _exec("doveconf", "-h", "login_trusted_networks").split()
    assert trusted == ["127.0.0.1/32", "::1/128"]
