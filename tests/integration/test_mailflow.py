"""Mail flow through the deployed Postfix + Dovecot host, probed like a client would.

Everything whose verdict depends on the client address (relay, AUTH before
TLS, plaintext IMAP login) is sent from this test process to the host's
published loopback ports. Published-port traffic reaches the container from
the podman bridge gateway, i.e. from outside ``mynetworks`` and outside
Dovecot's "secure" networks; a probe from 127.0.0.1 inside the container
would prove nothing. Only service management and config checks run inside
the container, through testinfra's podman backend.

Environment (set by tests/integration/conftest.py from ``qnprov lab up``, or
by molecule's verify step):
  QNPROV_TEST_HOST       container name
  QNPROV_TEST_ENDPOINTS  JSON {"smtp": "127.0.0.1:10025", "submission": ..., "submissions": ...,
                         "imaps": ..., "imap": ..., "sieve": ...}
  QNPROV_TEST_ACCOUNTS   JSON [{"address": ..., "password": ...}, ...] (two or more)
  QNPROV_TEST_CA         CA certificate that signed the host certificate
A missing variable fails the test: a mail-flow check that did not run must
not look like one that passed.
"""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import BinaryIO

import mailloss
import pytest
import testinfra
from labenv import require_env as _require_env

# mailflow: the conftest's no-silent-loss check runs after every test here.
pytestmark = [pytest.mark.lab, pytest.mark.mailflow]

# postscreen holds a new client for up to postscreen_greet_wait (6 s) before
# the real greeting, so SMTP timeouts must be well above that.
SMTP_TIMEOUT = 30.0
DELIVERY_DEADLINE = 30.0
RESTART_DEADLINE = 30.0


@dataclass(frozen=True)
class Account:
    address: str
    password: str


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int




@pytest.fixture(scope="module")
def accounts() -> list[Account]:
    raw = json.loads(_require_env("QNPROV_TEST_ACCOUNTS"))
    found = [Account(str(a["address"]), str(a["password"])) for a in raw]
    if len(found) < 2:
        pytest.fail("QNPROV_TEST_ACCOUNTS must list at least two accounts", pytrace=False)
    return found


@pytest.fixture(scope="module")
def endpoints() -> dict[str, Endpoint]:
    raw = json.loads(_require_env("QNPROV_TEST_ENDPOINTS"))
    parsed: dict[str, Endpoint] = {}
    for name in ("smtp", "submission", "submissions", "imaps", "imap", "sieve"):
        if name not in raw:
            pytest.fail(f"QNPROV_TEST_ENDPOINTS has no {name!r} endpoint", pytrace=False)
        host, _, port = str(raw[name]).rpartition(":")
        parsed[name] = Endpoint(host, int(port))
    return parsed


@pytest.fixture(scope="module")
def tls_context() -> ssl.SSLContext:
    """Verify the host's chain against the lab CA.

    The endpoints are host-loopback port forwards, so the name we dial
    (127.0.0.1) is not the certificate's name; the chain is still verified.
    """
    context = ssl.create_default_context(cafile=_require_env("QNPROV_TEST_CA"))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture(scope="module")
def mail_host() -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{_require_env('QNPROV_TEST_HOST')}")


@contextmanager
def smtp_session(endpoint: Endpoint) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=SMTP_TIMEOUT)
    try:
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _hosted_domain(accounts: list[Account]) -> str:
    return accounts[0].address.rpartition("@")[2]


def _message(sender: str, recipient: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg.set_content("qnprov mail-flow test message.\n")
    return msg


def _wait_for_subject(endpoint: Endpoint, account: Account, subject: str,
                      context: ssl.SSLContext) -> bytes:
    """Poll the INBOX over IMAPS until the message arrives; return it and delete it."""
    deadline = time.monotonic() + DELIVERY_DEADLINE
    with imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=context, timeout=SMTP_TIMEOUT) as imap:
        imap.login(account.address, account.password)
        while True:
            imap.select("INBOX")
            status, data = imap.search(None, "SUBJECT", f'"{subject}"')
            assert status == "OK"
            ids = data[0].split()
            if ids:
                status, fetched = imap.fetch(ids[0], "(RFC822)")
                assert status == "OK"
                first = fetched[0]
                assert isinstance(first, tuple)
                body = first[1]
                for msg_id in ids:
                    imap.store(msg_id, "+FLAGS", "\\Deleted")
                imap.expunge()
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"{subject!r} not in {account.address}'s INBOX after {DELIVERY_DEADLINE:.0f} s")
            time.sleep(1)


# --- delivery ---------------------------------------------------------------

def test_authenticated_submission_is_delivered_and_readable_over_imap(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    sender, recipient = accounts[0], accounts[1]
    subject = f"qnprov-mailflow-{uuid.uuid4().hex}"
    with smtp_session(endpoints["submission"]) as smtp:
        smtp.ehlo()
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        smtp.login(sender.address, sender.password)
        refused = smtp.send_message(_message(sender.address, recipient.address, subject))
    assert refused == {}

    body = _wait_for_subject(endpoints["imaps"], recipient, subject, tls_context)
    assert subject.encode() in body
    assert sender.address.encode() in body


def test_implicit_tls_submission_on_465_accepts_authenticated_mail(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    sender, recipient = accounts[1], accounts[0]
    subject = f"qnprov-mailflow-465-{uuid.uuid4().hex}"
    endpoint = endpoints["submissions"]
    with smtplib.SMTP_SSL(endpoint.host, endpoint.port, context=tls_context, timeout=SMTP_TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login(sender.address, sender.password)
        assert smtp.send_message(_message(sender.address, recipient.address, subject)) == {}
    assert subject.encode() in _wait_for_subject(endpoints["imaps"], recipient, subject, tls_context)


# --- refusals ------------------------------------------------------------------

def test_port_25_refuses_to_relay_for_an_outside_client(endpoints: dict[str, Endpoint]) -> None:
    with smtp_session(endpoints["smtp"]) as smtp:
        smtp.ehlo("probe.example.org")
        assert smtp.mail("someone@example.org")[0] == 250
        code, reply = smtp.rcpt("someone@example.net")
    assert code == 554, reply
    assert b"Relay access denied" in reply


def test_submission_refuses_a_recipient_without_authentication(
        endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext, accounts: list[Account]) -> None:
    with smtp_session(endpoints["submission"]) as smtp:
        smtp.ehlo()
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        smtp.mail(accounts[0].address)
        code, reply = smtp.rcpt("someone@example.net")
    assert 500 <= code < 600, reply


def test_submission_refuses_a_wrong_password(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    with smtp_session(endpoints["submission"]) as smtp:
        smtp.ehlo()
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(accounts[0].address, accounts[0].password + "-wrong")
    assert refused.value.smtp_code == 535


def test_imap_refuses_a_wrong_password(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    endpoint = endpoints["imaps"]
    with (imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=tls_context, timeout=SMTP_TIMEOUT) as imap,
          pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|Authentication failed")):
        imap.login(accounts[0].address, accounts[0].password + "-wrong")


def test_submission_refuses_a_sender_address_the_login_does_not_own(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    """reject_sender_login_mismatch: A may not send as B (smtpd_sender_login_maps from LDAP)."""
    login, victim = accounts[0], accounts[1]
    with smtp_session(endpoints["submission"]) as smtp:
        smtp.ehlo()
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        smtp.login(login.address, login.password)
        assert smtp.mail(victim.address)[0] == 250
        code, reply = smtp.rcpt(login.address)
    assert code == 553, reply
    assert b"not owned by user" in reply


def test_unknown_local_user_is_rejected_at_rcpt(
        accounts: list[Account], endpoints: dict[str, Endpoint]) -> None:
    unknown = f"nobody-{uuid.uuid4().hex[:12]}@{_hosted_domain(accounts)}"
    with smtp_session(endpoints["smtp"]) as smtp:
        smtp.ehlo("probe.example.org")
        assert smtp.mail("someone@example.org")[0] == 250
        code, reply = smtp.rcpt(unknown)
    assert code == 550, reply
    assert b"5.1.1" in reply


def _assert_port_25_accepts(endpoint: Endpoint, recipient: str) -> None:
    with smtp_session(endpoint) as smtp:
        smtp.ehlo("probe.example.org")
        assert smtp.mail("someone@example.org")[0] == 250
        code, reply = smtp.rcpt(recipient)
        smtp.rset()
    assert code == 250, reply


def test_a_hosted_recipient_is_accepted_on_port_25(
        accounts: list[Account], endpoints: dict[str, Endpoint]) -> None:
    """The counterpart of the two refusals above: they fail for the right reason."""
    _assert_port_25_accepts(endpoints["smtp"], accounts[0].address)


# --- AUTH and TLS ordering --------------------------------------------------------

def test_submission_offers_auth_only_after_starttls(
        endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    with smtp_session(endpoints["submission"]) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth"), smtp.esmtp_features
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
    assert "PLAIN" in mechanisms
    assert "ANONYMOUS" not in mechanisms


def test_port_25_never_offers_auth(endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    with smtp_session(endpoints["smtp"]) as smtp:
        smtp.ehlo("probe.example.org")
        assert not smtp.has_extn("auth"), smtp.esmtp_features
        assert smtp.has_extn("starttls")
        smtp.starttls(context=tls_context)
        smtp.ehlo("probe.example.org")
        assert not smtp.has_extn("auth"), smtp.esmtp_features


def test_imap_refuses_plaintext_login_before_starttls(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    endpoint = endpoints["imap"]
    with imaplib.IMAP4(endpoint.host, endpoint.port, timeout=SMTP_TIMEOUT) as imap:
        assert "LOGINDISABLED" in imap.capabilities
        assert "STARTTLS" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(accounts[0].address, accounts[0].password)
    with imaplib.IMAP4(endpoint.host, endpoint.port, timeout=SMTP_TIMEOUT) as imap:
        imap.starttls(ssl_context=tls_context)
        status, _ = imap.login(accounts[0].address, accounts[0].password)
        assert status == "OK"


def _read_managesieve_response(stream: BinaryIO) -> list[bytes]:
    """Lines up to and including the OK/NO/BYE that ends a ManageSieve response."""
    lines: list[bytes] = []
    while True:
        line = stream.readline()
        if not line:
            pytest.fail(f"ManageSieve closed the connection after {lines!r}")
        lines.append(line.rstrip(b"\r\n"))
        if line.startswith((b"OK", b"NO", b"BYE")):
            return lines


def _sasl_capability(lines: list[bytes]) -> bytes:
    for line in lines:
        if line.startswith(b'"SASL"'):
            return line.removeprefix(b'"SASL"').strip().strip(b'"')
    pytest.fail(f"no SASL capability in {lines!r}")


def test_managesieve_offers_authentication_only_after_starttls(
        accounts: list[Account], endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    endpoint = endpoints["sieve"]
    with socket.create_connection((endpoint.host, endpoint.port), timeout=SMTP_TIMEOUT) as raw:
        plain = raw.makefile("rb")
        greeting = _read_managesieve_response(plain)
        assert b'"STARTTLS"' in greeting
        assert _sasl_capability(greeting) == b"", greeting
        raw.sendall(b"STARTTLS\r\n")
        assert plain.readline().startswith(b"OK")
        with tls_context.wrap_socket(raw) as tls:
            secure = tls.makefile("rb")
            capabilities = _read_managesieve_response(secure)
            assert b"PLAIN" in _sasl_capability(capabilities).split()
            account = accounts[0]
            token = base64.b64encode(f"\0{account.address}\0{account.password}".encode())
            tls.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
            reply = _read_managesieve_response(secure)
            assert reply[-1].startswith(b"OK"), reply
            tls.sendall(b"LOGOUT\r\n")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("name", ["submissions", "imaps"])
def test_implicit_tls_refuses_protocols_below_tls_1_2(name: str, endpoints: dict[str, Endpoint]) -> None:
    endpoint = endpoints[name]
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy.check_hostname = False
    legacy.verify_mode = ssl.CERT_NONE
    # SECLEVEL=0 lets this client really offer TLS 1.0/1.1.
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    legacy.minimum_version = ssl.TLSVersion.TLSv1
    legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection((endpoint.host, endpoint.port), timeout=SMTP_TIMEOUT) as raw, \
            pytest.raises(ssl.SSLError):
        legacy.wrap_socket(raw).close()


@pytest.mark.parametrize("name", ["submissions", "imaps"])
def test_implicit_tls_negotiates_forward_secret_aead(
        name: str, endpoints: dict[str, Endpoint], tls_context: ssl.SSLContext) -> None:
    endpoint = endpoints[name]
    tls12 = ssl.create_default_context(cafile=_require_env("QNPROV_TEST_CA"))
    tls12.check_hostname = False
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    for context, expected in ((tls_context, "TLSv1.3"), (tls12, "TLSv1.2")):
        with socket.create_connection((endpoint.host, endpoint.port), timeout=SMTP_TIMEOUT) as raw, \
                context.wrap_socket(raw) as tls:
            negotiated = tls.cipher()
            assert negotiated is not None
            cipher, version, _ = negotiated
            assert version == expected
            if version == "TLSv1.2":
                assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher


# --- configuration and service lifecycle (inside the host) ---------------------

def test_live_configuration_checks_are_clean(mail_host: testinfra.host.Host) -> None:
    for command in ("/usr/sbin/postconf -n", "/usr/sbin/postfix check", "/usr/bin/doveconf -n"):
        result = mail_host.run(command)
        assert result.rc == 0, f"{command}: {result.stderr}"
        assert result.stderr.strip() == "", f"{command} warned: {result.stderr}"


def _wait_for_listener(endpoint: Endpoint) -> None:
    deadline = time.monotonic() + RESTART_DEADLINE
    while True:
        try:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on {endpoint.host}:{endpoint.port} after a restart")
            time.sleep(0.5)


def _restart(mail_host: testinfra.host.Host, unit: str) -> float:
    started = time.monotonic()
    result = mail_host.run(f"timeout {RESTART_DEADLINE:.0f} systemctl restart {unit}")
    elapsed = time.monotonic() - started
    assert result.rc == 0, f"systemctl restart {unit} failed: {result.stderr}"
    return elapsed


def test_postfix_restarts_cleanly(
        mail_host: testinfra.host.Host, endpoints: dict[str, Endpoint], accounts: list[Account]) -> None:
    elapsed = _restart(mail_host, "postfix")
    assert elapsed < RESTART_DEADLINE
    assert mail_host.run("/usr/sbin/postfix status").rc == 0
    assert mail_host.service("postfix@-").is_running
    for name in ("smtp", "submission", "submissions"):
        _wait_for_listener(endpoints[name])
    _assert_port_25_accepts(endpoints["smtp"], accounts[0].address)


def test_dovecot_restarts_cleanly(
        mail_host: testinfra.host.Host, endpoints: dict[str, Endpoint],
        accounts: list[Account], tls_context: ssl.SSLContext) -> None:
    elapsed = _restart(mail_host, "dovecot")
    assert elapsed < RESTART_DEADLINE
    assert mail_host.service("dovecot").is_running
    for name in ("imaps", "imap"):
        _wait_for_listener(endpoints[name])
    lmtp = mail_host.file("/var/spool/postfix/private/dovecot-lmtp")
    auth = mail_host.file("/var/spool/postfix/private/auth")
    assert lmtp.is_socket and lmtp.user == "postfix" and lmtp.mode == 0o600
    assert auth.is_socket and auth.user == "postfix" and auth.group == "postfix" and auth.mode == 0o660
    endpoint = endpoints["imaps"]
    with imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=tls_context, timeout=SMTP_TIMEOUT) as imap:
        assert imap.login(accounts[0].address, accounts[0].password)[0] == "OK"


# --- the no-silent-loss check itself -----------------------------------------------

@pytest.mark.undeliverable_bounce
def test_no_silent_loss_check_sees_a_lost_bounce_and_mail_stuck_without_reason(
        mail_host: testinfra.host.Host, accounts: list[Account]) -> None:
    """The conftest's check is not vacuous: it reports both kinds of silent loss."""
    container = _require_env("QNPROV_TEST_HOST")
    before = {str(e["queue_id"]) for e in mailloss.mail_queue(container)}
    cursor = mailloss.journal_cursor(container)
    nobody = f"nobody-{uuid.uuid4().hex[:12]}@{_hosted_domain(accounts)}"
    # A null-sender message (a bounce) to an address that does not exist: it bounces,
    # and that bounce has nobody to go to.
    lost = mail_host.run(f"printf 'Subject: lost bounce\\n\\nx\\n' | /usr/sbin/sendmail -i -f '' {nobody}")
    assert lost.rc == 0, lost.stderr
    deadline = time.monotonic() + DELIVERY_DEADLINE
    while True:
        log = mailloss.mail_log_after(container, cursor)
        if re.search(rf"to=<{re.escape(nobody)}>.*status=bounced", log):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no bounce of {nobody} in the log: {log[-2000:]}")
        time.sleep(1)
    queue = mailloss.mail_queue(container)
    problems = mailloss.silent_losses(queue, before, log, None, False)
    assert any(p.startswith("undeliverable bounce") and nobody in p for p in problems), problems
    assert mailloss.silent_losses(queue, before, log, None, True) == []
    # Queue entries in postqueue -j's shape: a held one nobody logged a reason for, a
    # deferred one with Postfix's reason (reported unless the test declared it).
    stuck = [
        {"queue_name": "hold", "queue_id": "5C0FFEE001", "sender": "a@b", "recipients": [{"address": "c@d"}]},
        {"queue_name": "deferred", "queue_id": "5C0FFEE002", "sender": "a@b",
         "recipients": [{"address": "c@d", "delay_reason": "connect to x[1.2.3.4]:25: Connection refused"}]},
    ]
    assert mailloss.silent_losses(stuck, set(), "", None, False) == [
        "5C0FFEE001 in the hold queue with no reason (sender <a@b>)",
        "5C0FFEE002 left in the deferred queue: ['connect to x[1.2.3.4]:25: Connection refused']",
    ]
    held_log = "postfix/cleanup[1]: 5C0FFEE001: milter-hold: END-OF-MESSAGE from x: qnprov 1.3(1) marking"
    assert mailloss.silent_losses(stuck, set(), held_log, r"1\.3\(1\)|Connection refused", False) == []
    assert mailloss.silent_losses(stuck, {"5C0FFEE001", "5C0FFEE002"}, "", None, False) == []
