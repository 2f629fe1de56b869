"""The webmail (roles/webmail, issue 14) on the lab, through its published HTTPS port.

Real services only: nginx and Roundcube in the lab container, logging in to the
real Dovecot, sending through the real Postfix submission, changing the password
in the real slapd. The HTTPS client trusts the lab CA and nothing else, sends the
official name as SNI and Host, and checks the certificate against that name.

The session is a plain HTTP client with Roundcube's CSRF token. It reads Roundcube's
answers; it does not run them: the real browser (Playwright driving Debian's Chromium)
is test_webmail_browser_lab.py.
"""

from __future__ import annotations

import base64
import email
import email.header
import http.client
import imaplib
import json
import re
import secrets
import socket
import ssl
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest
from labenv import require_env

from qnprov.directory.passwords import stored_password_problem
from qnprov_testing import roundcube

OFFICIAL_NAME = "mail1.quangninh.test"
ARGON2ID_PREFIX = b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$"
SUBJECT_PREFIX = "Báo cáo tuần – Sở Khoa học và Công nghệ"


def _endpoint(name: str) -> tuple[str, int]:
    host, _, port = json.loads(require_env("QNPROV_TEST_ENDPOINTS"))[name].rpartition(":")
    return host, int(port)


def _accounts() -> list[dict[str, str]]:
    return json.loads(require_env("QNPROV_TEST_ACCOUNTS"))


def _context() -> ssl.SSLContext:
    # Only the lab CA: no system store, hostname checked against the official name.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=require_env("QNPROV_TEST_CA"))
    return context


class _Connection(http.client.HTTPSConnection):
    """HTTPS to the published loopback port, with the official name as SNI."""

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=OFFICIAL_NAME)  # type: ignore[attr-defined]


class Browser:
    """Just enough of a browser for Roundcube: cookies, redirects, the request token."""

    def __init__(self) -> None:
        self.address = _endpoint("https")
        self.cookies: dict[str, str] = {}
        self.token = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, str]:
        conn = _Connection(*self.address, timeout=60, context=_context())
        body = urllib.parse.urlencode(form) if form is not None else None
        head = {"Host": OFFICIAL_NAME, "User-Agent": "qnprov-webmail-test", "Accept-Language": "vi,en;q=0.5"}
        if self.cookies:
            head["Cookie"] = roundcube.cookie_header(self.cookies)
        if body is not None:
            head["Content-Type"] = "application/x-www-form-urlencoded"
        head.update(headers or {})
        conn.request(method, path, body=body, headers=head)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        conn.close()
        roundcube.store_cookies(self.cookies, response.headers.get_all("Set-Cookie"))
        self.token = roundcube.request_token(text) or self.token
        return response.status, response.headers, text

    def follow(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        status, headers, text = self.request(method, path, form)
        hops = 0
        while status in (301, 302, 303) and hops < 5:
            location = headers["Location"]
            path = "/" + location.split("/", 3)[3] if location.startswith("https://") else \
                "/" + location.lstrip("./")
            status, headers, text = self.request("GET", path)
            hops += 1
        return status, path, text

    def login(self, user: str, password: str) -> tuple[int, str, str]:
        self.request("GET", "/")
        assert self.token, "the login page carries no CSRF token"
        return self.follow("POST", "/?_task=login", roundcube.login_form(self.token, user, password))


def _env(text: str) -> dict:
    found = re.search(r"rcmail\.set_env\((\{.*?\})\);", text, re.S)
    assert found, "no Roundcube environment in the page"
    return json.loads(found.group(1))


def _imap_login(address: str, password: str) -> imaplib.IMAP4_SSL:
    host, port = _endpoint("imaps")
    # The lab certificate also names 127.0.0.1, where the endpoints are published.
    client = imaplib.IMAP4_SSL(host, port, ssl_context=_context())
    client.login(address, password)
    return client


def _imap_refuses(address: str, password: str) -> bool:
    try:
        _imap_login(address, password).logout()
    except imaplib.IMAP4.error:
        return True
    return False


def test_https_page_carries_the_security_headers_with_only_the_lab_ca():
    browser = Browser()
    status, headers, text = browser.request("GET", "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'self'"
    assert directives["object-src"] == "'none'"
    # Roundcube 1.6 eval()s its AJAX answers (see the browser test); nothing from another origin.
    assert directives["script-src"] == "'self' 'unsafe-inline' 'unsafe-eval'"
    allowed = {"'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "data:", "blob:"}
    assert all(set(sources.split()) <= allowed for sources in directives.values()), directives
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"].upper() == "SAMEORIGIN"
    assert len(headers.get_all("X-Frame-Options")) == 1
    assert headers["Referrer-Policy"] == "same-origin"
    # No version disclosure: nginx's bare name only, no PHP banner, no Roundcube version.
    assert headers["Server"] == "nginx"
    assert "X-Powered-By" not in headers
    assert not re.search(r"1\.6\.\d|Roundcube Webmail/", text)
    # Vietnamese by default.
    assert re.search(r'<html[^>]* lang="vi"', text), text[:300]
    session = [c for c in headers.get_all("Set-Cookie") or [] if c.startswith("qnwm_sessid=")]
    assert session, headers.get_all("Set-Cookie")
    flags = {part.strip().lower() for part in session[0].split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict"} <= flags, session[0]
    # Sources and configuration are never served.
    for path in ("/config/config.inc.php", "/plugins/password/config.inc.php", "/program/include/rcmail.php",
                 "/plugins/password/password.php", "/.htaccess", "/SQL/sqlite.initial.sql", "/installer/"):
        assert browser.request("GET", path)[0] == 404, path


@pytest.mark.mailflow
def test_login_send_in_vietnamese_read_over_imap_and_change_the_password():
    sender, recipient = _accounts()[0], _accounts()[1]
    browser = Browser()
    started = time.monotonic()
    status, path, text = browser.login(sender["address"], sender["password"])
    login_to_inbox = time.monotonic() - started
    assert status == 200 and "_task=mail" in path, (status, path)
    env = _env(text)
    assert env["task"] == "mail" and env["mailbox"] == "INBOX" and sender["address"] in text
    assert "qnwm_sessauth" in browser.cookies
    print(f"login-to-inbox {login_to_inbox * 1000:.0f} ms")

    # The inbox list over Roundcube's own AJAX call (the IMAP session behind it).
    status, _, listing = browser.request("GET", "/?_task=mail&_action=list&_mbox=INBOX&_remote=1",
                                         headers={"X-Roundcube-Request": browser.token})
    assert status == 200 and '"action":"list"' in listing, listing[:300]

    # Compose and send through submission, with a Vietnamese subject.
    status, path, compose = browser.follow("GET", "/?_task=mail&_action=compose")
    compose_id = _env(compose)["compose_id"]
    identity = re.search(r'<select name="_from"[^>]*>\s*<option value="(\d+)"', compose)
    assert identity, "no sender identity in the compose form"
    subject = f"{SUBJECT_PREFIX} {uuid.uuid4().hex[:8]}"
    status, _, sent = browser.request("POST", "/?_task=mail&_action=send", {
        "_token": browser.token, "_task": "mail", "_action": "send", "_id": compose_id,
        "_from": identity.group(1), "_to": recipient["address"], "_cc": "", "_bcc": "", "_replyto": "",
        "_followupto": "", "_subject": subject, "_message": "Kính gửi anh/chị,\nNội dung thử nghiệm.\n",
        "_is_html": "0", "_draft": "", "_store_target": "Sent", "_priority": "0", "_mdn": "", "_dsn": ""})
    assert status == 200 and "sent_successfully" in sent, sent[-800:]

    deadline = time.monotonic() + 120
    found = None
    while found is None and time.monotonic() < deadline:
        imap = _imap_login(recipient["address"], recipient["password"])
        imap.select("INBOX", readonly=True)
        _typ, data = imap.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", subject.split()[-1])
        uids = data[0].split()
        if uids:
            _typ, fetched = imap.uid("FETCH", uids[-1], "(BODY.PEEK[HEADER])")
            found = email.message_from_bytes(fetched[0][1])
        imap.logout()
        if found is None:
            time.sleep(2)
    assert found is not None, f"{subject!r} did not reach {recipient['address']}"
    decoded = str(email.header.make_header(email.header.decode_header(found["Subject"])))
    assert decoded == subject
    assert sender["address"] in found["From"]

    # The filters UI reached Dovecot's ManageSieve (STARTTLS, verified; Dovecot refuses
    # authentication without TLS): Roundcube sets currentset only after a good login.
    status, _, sieve = browser.request("GET", "/?_task=settings&_action=plugin.managesieve")
    sieve_env = _env(sieve)
    assert status == 200 and "currentset" in sieve_env and not sieve_env.get("filterconnerror"), sieve_env

    # Password change through the plugin (LDAP Password Modify as the user).
    new_password = "Qn-" + secrets.token_urlsafe(18)
    status, _, form = browser.request("GET", "/?_task=settings&_action=plugin.password")
    assert status == 200 and "_curpasswd" in form
    changed = False
    before = _stored_hash(sender["address"])
    try:
        changed = _change_password(browser, sender["password"], new_password)
        _imap_login(sender["address"], new_password).logout()
        assert _imap_refuses(sender["address"], sender["password"])
        # Issue 9 item 7: slapd hashed the webmail's change as one clean argon2id value.
        after = _stored_hash(sender["address"])
        assert after != before
        scheme_ok = after.startswith(ARGON2ID_PREFIX)  # the hash itself stays out of a failure report
        assert scheme_ok, after[:len(ARGON2ID_PREFIX)]
        assert stored_password_problem(after) is None
    finally:
        # Put the lab password back (other suites use it), the same way.
        if changed:
            assert _change_password(browser, new_password, sender["password"])
    _imap_login(sender["address"], sender["password"]).logout()
    assert _imap_refuses(sender["address"], new_password)


def _stored_hash(address: str) -> bytes:
    """The account's raw userPassword, read with slapcat in the lab host (nothing decoded as text)."""
    dump = subprocess.run(["podman", "exec", require_env("QNPROV_TEST_HOST"), "slapcat", "-o", "ldif-wrap=no",
                           "-F", "/etc/ldap/slapd.d", "-a", f"(mail={address})"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    values = [line.split(":", 1)[1] for line in dump.splitlines() if line.startswith("userPassword:")]
    assert len(values) == 1, f"{len(values)} userPassword values for {address}"
    value = values[0]
    return base64.b64decode(value[1:].strip()) if value.startswith(":") else value.strip().encode()


def _change_password(browser: Browser, current: str, new: str) -> bool:
    status, _, saved = browser.follow("POST", "/?_task=settings&_action=plugin.password-save", {
        "_token": browser.token, "_task": "settings", "_action": "plugin.password-save",
        "_curpasswd": current, "_newpasswd": new, "_confpasswd": new})
    assert status == 200
    message = re.search(r'rcmail\.display_message\("([^"]*)","(\w+)"', saved)
    assert message and message.group(2) == "confirmation", saved[-800:]
    return True


def _language_prefs(browser: Browser, language: str) -> str:
    status, _, saved = browser.request("POST", "/?_task=settings&_action=save-prefs", {
        "_token": browser.token, "_task": "settings", "_action": "save-prefs", "_section": "general",
        "_framed": "1", "_language": language})
    message = re.search(r'rcmail\.display_message\("([^"]*)","(\w+)"', saved)
    assert status == 200 and message and message.group(2) == "confirmation", saved[-500:]
    return message.group(1)


def test_vietnamese_by_default_and_english_on_request():
    account = _accounts()[2]
    browser = Browser()
    status, _, text = browser.login(account["address"], account["password"])
    assert status == 200 and re.search(r'<html[^>]* lang="vi"', text)
    try:
        # Saved in Vietnamese, the answer to the change is already English.
        assert _language_prefs(browser, "en_US") == "Successfully saved."
        status, _, text = browser.follow("GET", "/?_task=mail")
        assert status == 200 and re.search(r'<html[^>]* lang="en"', text)
    finally:
        assert _language_prefs(browser, "vi_VN") == "Đã lưu thành công"


def test_wrong_password_and_unknown_account_get_the_same_generic_failure():
    # After the logins above: Dovecot's auth penalty (per address, and the webmail is always
    # 127.0.0.1) would otherwise slow them by seconds.
    account = _accounts()[0]
    answers = []
    for user, password in ((account["address"], "sai-mat-khau-" + secrets.token_hex(4)),
                           (f"khong-ton-tai-{uuid.uuid4().hex[:8]}@quangninh.test", "x" * 16)):
        browser = Browser()
        status, _, text = browser.login(user, password)
        message = re.search(r'rcmail\.display_message\("([^"]*)","(\w+)"', text)
        assert message, text[:500]
        answers.append((status, message.group(1), message.group(2)))
        assert "qnwm_sessauth" not in browser.cookies
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 401 and answers[0][2] == "warning"
    # The failure reaches the journal with the client address, where the fail2ban
    # filter of the role finds it (fail2ban-regex on the real journal).
    container = require_env("QNPROV_TEST_HOST")
    proc = subprocess.run(
        ["podman", "exec", container, "fail2ban-regex", "systemd-journal",
         "/etc/fail2ban/filter.d/qnprov-webmail.conf"], capture_output=True, text=True, timeout=120, check=False)
    matched = re.search(r"Failregex: (\d+) total", proc.stdout)
    assert matched and int(matched.group(1)) >= 2, proc.stdout[-1500:] + proc.stderr[-500:]


@pytest.fixture
def whole_login_allowance() -> Iterator[None]:
    """The login allowance (10/min, burst 10) is per client address, and every lab test logs
    in from the same one. Let a full minute pass before (the allowance is then whole whatever
    ran before) and after (the test spends it all, and later modules, such as
    test_webmail_sievepolicy_lab.py, log in again at once)."""
    time.sleep(61)
    yield
    time.sleep(61)


def test_login_posts_beyond_the_burst_are_throttled_by_nginx(whole_login_allowance: None):
    browser = Browser()
    statuses = []
    for _ in range(16):
        status, headers, _ = browser.request("POST", "/?_task=login", {"_task": "login", "_action": "login",
                                                                     "_user": "x@quangninh.test", "_pass": "x"})
        statuses.append(status)
        if status == 429:
            # The refusal still carries the security headers (add_header ... always).
            assert headers["Strict-Transport-Security"].startswith("max-age=")
    # The module's earlier logins took part of the burst; once refused, every quick retry is too.
    assert 429 in statuses, statuses
    first = statuses.index(429)
    # nodelay: the request itself plus the burst pass at once, the next is refused.
    assert first == 1 + 10 and set(statuses[first:]) == {429}, statuses
    # Other pages are not throttled.
    assert browser.request("GET", "/")[0] == 200
