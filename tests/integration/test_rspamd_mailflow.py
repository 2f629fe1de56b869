"""rspamd as Postfix's milter, seen from the outside: mail really gets signed and checked.

Submitted over the published submission port by a lab account, read back over
IMAPS: the delivered copy carries a DKIM signature by the hosted domain that
verifies against the record rspamd published on the host. Mail from an
outside client on port 25 arrives with rspamd's Authentication-Results and an
ARC seal. This proves the wiring (postfix_milters = inet:127.0.0.1:11332,
SASL identity passed in the milter macros), which the rspamc checks in
test_rspamd_os_roles.py cannot.

Environment: QNPROV_TEST_HOST, QNPROV_TEST_ENDPOINTS, QNPROV_TEST_ACCOUNTS,
QNPROV_TEST_CA (see test_mailflow.py). A missing variable fails the test.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import re
import smtplib
import ssl
import uuid
from email.message import EmailMessage

import dkim
import pytest
import testinfra
import yaml
from labenv import require_env as _require_env
from labenv import send_from_outside

from qnprov import paths
from qnprov_testing.cli import fetch_and_delete

# mailflow: the conftest's no-silent-loss check runs after every test here.
pytestmark = [pytest.mark.lab, pytest.mark.mailflow]

TIMEOUT = 30.0
SELECTOR = yaml.safe_load((paths.ROLES_DIR / "rspamd" / "defaults" / "main.yml").read_text())[
    "rspamd_dkim_selector"]




def _endpoint(name: str) -> tuple[str, int]:
    host, _, port = str(json.loads(_require_env("QNPROV_TEST_ENDPOINTS"))[name]).rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def accounts() -> list[tuple[str, str]]:
    found = [(str(a["address"]), str(a["password"])) for a in json.loads(_require_env("QNPROV_TEST_ACCOUNTS"))]
    if len(found) < 2:
        pytest.fail("QNPROV_TEST_ACCOUNTS must list at least two accounts", pytrace=False)
    return found


@pytest.fixture(scope="module")
def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=_require_env("QNPROV_TEST_CA"))
    context.check_hostname = False  # loopback port forwards; the chain is still verified
    return context


def _message(sender: str, recipient: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    message["Date"] = email.utils.formatdate(localtime=True)
    # Plain ASCII on purpose: mixed scripts score R_MIXED_CHARSET, which would
    # push the outside test mail over rspamd's greylisting threshold (4).
    message.set_content("DKIM and authentication results check.\n")
    return message


def _fetch(account: tuple[str, str], subject: str, context: ssl.SSLContext) -> bytes:
    """Poll the INBOX until the message arrives; return it raw and delete it."""
    host, port = _endpoint("imaps")
    return fetch_and_delete(host, port, context, *account, subject, timeout=TIMEOUT)


def _published_record(domain: str) -> bytes:
    host = testinfra.get_host(f"podman://{_require_env('QNPROV_TEST_HOST')}")
    text = host.file(f"/var/lib/rspamd/dkim/{domain}.{SELECTOR}.txt").content_string
    return "".join(re.findall(r'"([^"]*)"', text)).encode()


def test_submitted_mail_arrives_with_a_valid_dkim_signature(
        accounts: list[tuple[str, str]], tls_context: ssl.SSLContext) -> None:
    sender, recipient = accounts[0], accounts[1]
    domain = sender[0].rpartition("@")[2]
    subject = f"qnprov dkim {uuid.uuid4().hex[:12]}"
    host, port = _endpoint("submission")
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=tls_context)
        smtp.login(*sender)
        smtp.send_message(_message(sender[0], recipient[0], subject))
    raw = _fetch(recipient, subject, tls_context)
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    signatures = parsed.get_all("DKIM-Signature") or []
    assert signatures, "the delivered message carries no DKIM-Signature"
    tags = dict(t.split("=", 1) for t in re.sub(r"\s+", "", signatures[0]).split(";") if "=" in t)
    assert (tags["d"], tags["s"]) == (domain, SELECTOR)
    record = _published_record(domain)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == f"{SELECTOR}._domainkey.{domain}"
        return record

    assert dkim.verify(raw, dnsfunc=dns), "the DKIM signature on the delivered message does not verify"


def test_mail_from_outside_arrives_with_authentication_results_and_an_arc_seal(
        accounts: list[tuple[str, str]], tls_context: ssl.SSLContext) -> None:
    recipient = accounts[1]
    domain = recipient[0].rpartition("@")[2]
    subject = f"qnprov inbound {uuid.uuid4().hex[:12]}"
    host, port = _endpoint("smtp")
    # Published-port traffic comes from the podman bridge: an outside client.
    # A fresh sender each run; a 4xx (greylisting) is retried for a bounded time, as an MTA would.
    sender = f"sender-{uuid.uuid4().hex[:8]}@example.org"
    send_from_outside(host, port, sender, [recipient[0]],
                      _message(sender, recipient[0], subject).as_bytes(policy=email.policy.SMTP))
    parsed = email.message_from_bytes(_fetch(recipient, subject, tls_context), policy=email.policy.compat32)
    results = " ".join(parsed.get_all("Authentication-Results") or [])
    for method in ("spf=", "dkim=", "dmarc="):
        assert method in results, f"Authentication-Results lacks {method}: {results!r}"
    seal = re.sub(r"\s+", "", parsed.get("ARC-Seal", ""))
    assert f"d={domain};" in seal, f"no ARC seal by {domain}: {parsed.get('ARC-Seal')!r}"
