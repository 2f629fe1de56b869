"""SMTPUTF8 clients on ports 25, 587 and 465 of the lab (issue 9 item 2).

Dovecot 2.3's LMTP has no SMTPUTF8. When Postfix offered it, a message sent with
``MAIL FROM:<...> SMTPUTF8`` and a Vietnamese subject got 250, then bounced at
delivery with 5.6.7, and its bounce bounced too: the mail was gone. Postfix now does
not offer SMTPUTF8 (roles/postfix, ``smtputf8_enable = no``), so:

* a client that asks for SMTPUTF8 anyway is refused at MAIL, while it still holds
  the message (never 250-then-lost);
* a client that uses SMTPUTF8 only when offered (Python's ``send_message``) falls
  back to RFC 2047 headers, and the Vietnamese subject arrives intact over IMAP;
  8-bit UTF-8 headers without the parameter arrive byte for byte;
* a UTF-8 address (sender or recipient) is refused with 553 5.6.7 at RCPT, on
  every port (Postfix would otherwise take 8-bit addresses without SMTPUTF8).

Every test here is a ``mailflow`` test: the conftest's no-silent-loss check runs
after each one (nothing new left deferred or held, no undeliverable bounce).
"""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from labenv import OUTSIDE_RETRY_DEADLINE, date_header, require_env

pytestmark = [pytest.mark.lab, pytest.mark.mailflow]

SMTP_TIMEOUT = 30.0
DELIVERY_DEADLINE = 60.0
SUBJECT = "Giấy mời họp về công tác chuyển đổi số tỉnh Quảng Ninh"
BODY = "Kính gửi các đồng chí,\nĐề nghị tham dự đúng giờ.\nTrân trọng./.\n"
UTF8_LOCAL_PART = "nguyễn.văn.ạ"
PORTS = ["smtp", "submission", "submissions"]
REFUSED_ADDRESS = re.compile(rb"^5\.6\.7 <.*>: (Sender|Recipient) address rejected: "
                             rb"Non-ASCII address: this server does not support SMTPUTF8$")


@pytest.fixture(scope="module")
def accounts() -> list[tuple[str, str]]:
    found = [(str(a["address"]), str(a["password"])) for a in json.loads(require_env("QNPROV_TEST_ACCOUNTS"))]
    assert len(found) >= 2, "the lab needs two accounts"
    return found


@pytest.fixture(scope="module")
def endpoints() -> dict[str, tuple[str, int]]:
    raw = json.loads(require_env("QNPROV_TEST_ENDPOINTS"))
    parsed = {}
    for name in [*PORTS, "imaps"]:
        host, _, port = str(raw[name]).rpartition(":")
        parsed[name] = (host, int(port))
    return parsed


@pytest.fixture(scope="module")
def tls() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=require_env("QNPROV_TEST_CA"))
    context.check_hostname = False
    return context


@contextmanager
def session(port: str, endpoints: dict[str, tuple[str, int]], tls: ssl.SSLContext,
            login: tuple[str, str]) -> Iterator[smtplib.SMTP]:
    """A client on one of the three ports: an outside MTA on 25, an authenticated MUA on 587/465."""
    host, number = endpoints[port]
    client: smtplib.SMTP
    if port == "submissions":
        client = smtplib.SMTP_SSL(host, number, context=tls, timeout=SMTP_TIMEOUT)
    else:
        # An outside MTA names itself (a bare-IP HELO scores in rspamd).
        client = smtplib.SMTP(host, number, local_hostname="mx.example.org", timeout=SMTP_TIMEOUT)
    try:
        client.ehlo()
        if port == "submission":
            client.starttls(context=tls)
            client.ehlo()
        if port != "smtp":
            client.login(*login)
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _sender(port: str, accounts: list[tuple[str, str]]) -> str:
    # Port 25 takes mail from outside; a fresh sender keeps greylisting keys apart.
    return f"congdan-{uuid.uuid4().hex[:8]}@example.org" if port == "smtp" else accounts[0][0]


def _message(sender: str, recipient: str) -> tuple[EmailMessage, str]:
    token = make_msgid(domain="utf8-lab.test")
    message = EmailMessage()
    message["From"] = f"Nguyễn Văn An <{sender}>"
    message["To"] = recipient
    message["Subject"] = SUBJECT
    message["Date"] = date_header()
    message["Message-ID"] = token
    message.set_content(BODY + token + "\n")
    return message, token


def _fetch(endpoints: dict[str, tuple[str, int]], tls: ssl.SSLContext, account: tuple[str, str],
           token: str) -> bytes:
    """The delivered message (found by Message-ID over IMAPS), deleted once read."""
    host, port = endpoints["imaps"]
    deadline = time.monotonic() + DELIVERY_DEADLINE
    with imaplib.IMAP4_SSL(host, port, ssl_context=tls, timeout=SMTP_TIMEOUT) as imap:
        imap.login(*account)
        while True:
            imap.select("INBOX")
            _, found = imap.search(None, "HEADER", "Message-ID", token)
            ids = found[0].split() if found and found[0] else []
            if ids:
                _, data = imap.fetch(ids[-1], "(BODY.PEEK[])")
                raw = next(bytes(item[1]) for item in data if isinstance(item, tuple))
                for msg_id in ids:
                    imap.store(msg_id, "+FLAGS", "\\Deleted")
                imap.expunge()
                return raw
            if time.monotonic() > deadline:
                pytest.fail(f"{token} not in {account[0]}'s INBOX after {DELIVERY_DEADLINE:.0f} s", pytrace=False)
            time.sleep(1)


def _send_retrying_greylist(port: str, endpoints: dict[str, tuple[str, int]], tls: ssl.SSLContext,
                            login: tuple[str, str], send: object) -> None:
    """Run ``send(client)``; a 4xx (greylisting on port 25) is retried as a real MTA would, within a bound."""
    deadline = time.monotonic() + OUTSIDE_RETRY_DEADLINE
    delay = 10.0
    while True:
        try:
            with session(port, endpoints, tls, login) as client:
                send(client)  # type: ignore[operator]
            return
        except (smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused) as exc:
            codes = ([exc.smtp_code] if isinstance(exc, smtplib.SMTPDataError)
                     else [code for code, _ in exc.recipients.values()])
            if not all(400 <= code < 500 for code in codes) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 60.0)


@pytest.mark.parametrize("port", PORTS)
def test_smtputf8_is_not_offered(port: str, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    with session(port, endpoints, tls, accounts[0]) as client:
        assert client.does_esmtp
        assert "8bitmime" in client.esmtp_features, client.esmtp_features
        assert not client.has_extn("smtputf8"), client.esmtp_features


@pytest.mark.parametrize("port", PORTS)
def test_client_insisting_on_smtputf8_is_refused_at_mail_not_accepted_and_lost(  # type: ignore[no-untyped-def]
        port: str, endpoints, tls, accounts) -> None:
    """The issue's reproduction: smtplib, mail_options=['SMTPUTF8'], raw UTF-8 subject."""
    sender, recipient = _sender(port, accounts), accounts[1][0]
    message, _ = _message(sender, recipient)
    raw = message.as_bytes(policy=policy.SMTPUTF8)
    with session(port, endpoints, tls, accounts[0]) as client:
        # smtplib itself now stops before MAIL: the server does not offer SMTPUTF8.
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.sendmail(sender, [recipient], raw, mail_options=["SMTPUTF8"])
        # A client that sends the parameter anyway is refused at MAIL.
        code, reply = client.docmd("MAIL", f"FROM:<{sender}> SMTPUTF8")
    assert (code, reply) == (555, b"5.5.4 Unsupported option: SMTPUTF8")


@pytest.mark.parametrize("port", PORTS)
def test_smtputf8_client_falls_back_and_the_vietnamese_subject_arrives_intact(  # type: ignore[no-untyped-def]
        port: str, endpoints, tls, accounts) -> None:
    """send_message uses SMTPUTF8 only when offered; without it the headers go out RFC 2047-encoded."""
    sender, recipient = _sender(port, accounts), accounts[1]
    message, token = _message(sender, recipient[0])
    _send_retrying_greylist(port, endpoints, tls, accounts[0],
                            lambda client: client.send_message(message))
    delivered = message_from_bytes(_fetch(endpoints, tls, recipient, token), policy=policy.default)
    assert delivered["Subject"] == SUBJECT
    assert str(delivered["From"]) == f"Nguyễn Văn An <{sender}>"
    assert delivered.get_content().replace("\r\n", "\n") == BODY + token + "\n"


@pytest.mark.parametrize("port", PORTS)
def test_8bit_utf8_headers_without_smtputf8_arrive_byte_for_byte(  # type: ignore[no-untyped-def]
        port: str, endpoints, tls, accounts) -> None:
    sender, recipient = _sender(port, accounts), accounts[1]
    message, token = _message(sender, recipient[0])
    raw = message.as_bytes(policy=policy.SMTPUTF8)
    assert SUBJECT.encode() in raw
    _send_retrying_greylist(port, endpoints, tls, accounts[0],
                            lambda client: client.sendmail(sender, [recipient[0]], raw, mail_options=["BODY=8BITMIME"]))
    delivered = _fetch(endpoints, tls, recipient, token)
    assert b"Subject: " + SUBJECT.encode() + b"\r\n" in delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert message_from_bytes(delivered, policy=policy.default)["Subject"] == SUBJECT


def _raw_command(client: smtplib.SMTP, line: str) -> tuple[int, bytes]:
    """One SMTP command with UTF-8 in it (smtplib itself only sends ASCII without SMTPUTF8)."""
    client.send(line.encode("utf-8") + b"\r\n")
    return client.getreply()


@pytest.mark.parametrize("port", PORTS)
def test_utf8_local_part_recipient_refused_at_rcpt(port: str, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    domain = accounts[0][0].rpartition("@")[2]
    sender = _sender(port, accounts)
    with session(port, endpoints, tls, accounts[0]) as client:
        assert client.mail(sender)[0] == 250
        code, reply = _raw_command(client, f"RCPT TO:<{UTF8_LOCAL_PART}@{domain}>")
        # with the SMTPUTF8 parameter the client would use if it were offered: refused at MAIL
        client.rset()
        mail_code, mail_reply = _raw_command(client, f"MAIL FROM:<{sender}> SMTPUTF8")
    assert code == 553 and REFUSED_ADDRESS.match(reply), (code, reply)
    assert (mail_code, mail_reply) == (555, b"5.5.4 Unsupported option: SMTPUTF8")


@pytest.mark.parametrize("port", PORTS)
def test_utf8_local_part_sender_refused(port: str, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    """A sender address with a UTF-8 local part gets a 5xx at MAIL or RCPT, never 250 at DATA."""
    domain = "example.org" if port == "smtp" else accounts[0][0].rpartition("@")[2]
    with session(port, endpoints, tls, accounts[0]) as client:
        code, reply = _raw_command(client, f"MAIL FROM:<{UTF8_LOCAL_PART}@{domain}>")
        if code == 250:  # smtpd_delay_reject: a sender refusal is given at RCPT
            code, reply = client.rcpt(accounts[1][0])
    assert code == 553 and REFUSED_ADDRESS.match(reply), (code, reply)
