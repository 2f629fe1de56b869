"""The decision at SMTP time on the deployed lab (issue 4, "In the lab, through real Postfix").

Traffic goes to the lab's published loopback ports; state (Sieve scripts, the audit
trail, the mail log, the milter's process) is read and changed inside the container
with ``podman exec``. The lab must be up with the qnprov_milter role deployed and
wired into Postfix (smtpd_milters, the 127.0.0.1:10027 re-injection listener) and
Dovecot (submission_host); anything missing fails these tests, it never skips them.

Environment: the variables tests/integration/conftest.py exports from ``qnprov lab up``.
"""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from labenv import date_header, send_from_outside
from labenv import require_env as _env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "policy"))
import milter_corpus as corpus
import signing_fixtures

# mailflow: the conftest's no-silent-loss check runs after every test here.
pytestmark = [pytest.mark.lab, pytest.mark.mailflow]

SMTP_TIMEOUT = 60.0
DELIVERY_DEADLINE = 60.0
AUDIT_DIR = "/var/log/qnprov/audit"
#: Headers the relays and filters may add in front of or after the original ones.
ADDED_HEADERS = re.compile(
    rb"^(received|return-path|delivered-to|x-qn-[a-z-]+|x-spam[a-z-]*|x-rspamd-[a-z-]+|authentication-results"
    rb"|x-spamd-[a-z-]+|dkim-signature|arc-[a-z-]+):",
    re.IGNORECASE,
)

#: A queue file's delivery line ("3F2A1C0D9E: to=<...>, relay=..."); a NOQUEUE reject is not one.
QUEUED_TO_GMAIL = re.compile(r"\b[0-9A-F]{6,}: to=<canbo\.rieng@gmail\.com>")


@dataclass(frozen=True)
class Account:
    address: str
    password: str




@pytest.fixture(scope="module")
def container() -> str:
    name = _env("QNPROV_TEST_HOST")
    state = subprocess.run(["podman", "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                           text=True, check=False)
    if state.stdout.strip() != "true":
        pytest.fail(f"lab container {name} is not running", pytrace=False)
    return name


def _exec(container: str, *argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(["podman", "exec", "-i", container, *argv], capture_output=True, text=True,
                            input=stdin, check=False, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed in {container}: {result.stderr[-1000:]}", pytrace=False)
    return result.stdout


@pytest.fixture(scope="module")
def accounts() -> list[Account]:
    found = [Account(a["address"], a["password"]) for a in json.loads(_env("QNPROV_TEST_ACCOUNTS"))]
    if len(found) < 2:
        pytest.fail("the lab needs two accounts", pytrace=False)
    return found


@pytest.fixture(scope="module")
def endpoints() -> dict[str, tuple[str, int]]:
    raw = json.loads(_env("QNPROV_TEST_ENDPOINTS"))
    parsed = {}
    for name, value in raw.items():
        host, _, port = str(value).rpartition(":")
        parsed[name] = (host or "127.0.0.1", int(port))
    for needed in ("smtp", "submission", "imaps"):
        if needed not in parsed:
            pytest.fail(f"lab endpoint {needed} missing", pytrace=False)
    return parsed


@pytest.fixture(scope="module")
def tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=_env("QNPROV_TEST_CA"))


@pytest.fixture(scope="module", autouse=True)
def milter_is_deployed(container: str) -> None:
    state = _exec(container, "systemctl", "is-active", "qnprov-milter", check=False).strip()
    if state != "active":
        pytest.fail(f"qnprov-milter is {state or 'missing'} in the lab: deploy roles/qnprov_milter", pytrace=False)
    milters = _exec(container, "postconf", "-h", "smtpd_milters")
    if "qnprov" not in milters:
        pytest.fail(f"Postfix smtpd_milters does not include the qnprov milter: {milters.strip()}", pytrace=False)


def _submit(endpoints: dict[str, tuple[str, int]], tls: ssl.SSLContext, account: Account, rcpts: list[str],
            message: bytes) -> None:
    host, port = endpoints["submission"]
    with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT) as client:
        client.starttls(context=tls)
        client.login(account.address, account.password)
        client.sendmail(account.address, rcpts, message)


def _mx(endpoints: dict[str, tuple[str, int]], sender: str, rcpts: list[str], message: bytes) -> None:
    host, port = endpoints["smtp"]
    send_from_outside(host, port, sender, rcpts, message)


def _fetch(endpoints: dict[str, tuple[str, int]], tls: ssl.SSLContext, account: Account, token: str) -> bytes:
    host, port = endpoints["imaps"]
    deadline = time.monotonic() + DELIVERY_DEADLINE
    while time.monotonic() < deadline:
        with imaplib.IMAP4_SSL(host, port, ssl_context=tls) as imap:
            imap.login(account.address, account.password)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "HEADER", "Message-ID", token)
            ids = found[0].split() if found and found[0] else []
            if ids:
                _, data = imap.fetch(ids[-1], "(BODY.PEEK[])")
                for item in data:
                    if isinstance(item, tuple):
                        return bytes(item[1])
        time.sleep(1)
    pytest.fail(f"{token} did not reach {account.address} within {DELIVERY_DEADLINE:.0f}s", pytrace=False)


def _message(sender: str, to: str, subject: str, *, attachment: tuple[str, str, bytes] | None = None) -> tuple[
        bytes, str]:
    token = f"<{uuid.uuid4().hex}@policy-lab.test>"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = token
    message["Date"] = date_header()
    # The token in the body too: rspamd's greylisting also keys on the body's digest.
    message.set_content(f"Kính gửi anh chị,\nNội dung kiểm thử {token}.\nTrân trọng./.\n")
    if attachment:
        name, ctype, data = attachment
        maintype, _, subtype = ctype.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes(policy=SMTP), token


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def _assert_unchanged_except_added_headers(original: bytes, delivered: bytes) -> list[bytes]:
    """Body byte-identical; original header fields all present, in order, unmodified."""
    original_fields, original_body = _split(original)
    delivered_fields, delivered_body = _split(delivered)
    assert delivered_body == original_body
    kept = [f for f in delivered_fields if not ADDED_HEADERS.match(f) or f in original_fields]
    assert kept == original_fields
    return [f for f in delivered_fields if f not in original_fields]


def _audit(container: str) -> list[dict]:
    text = _exec(container, "sh", "-c", f"cat {AUDIT_DIR}/audit-*.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _maillog(container: str, since: str) -> str:
    # "-o short" keeps the syslog identifier (postfix/reinject/smtpd) the assertions look for.
    return _exec(container, "journalctl", "--no-pager", "-o", "short", "--since", since, "-u", "postfix@-",
                 "-u", "postfix", "-u", "dovecot", check=False) + _exec(
        container, "sh", "-c", "cat /var/log/mail.log 2>/dev/null || true", check=False)


def _now(container: str) -> str:
    return _exec(container, "date", "+%Y-%m-%d %H:%M:%S").strip()


def test_marked_docx_refused_at_data_citing_1_3_1(endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = accounts[0], accounts[1]
    message, _ = _message(sender.address, recipient.address, "Gửi báo cáo", attachment=(
        "baocao.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        corpus.docx_bytes(["Số: 15/BC-UBND", "TỐI MẬT", "Báo cáo tình hình."])))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _submit(endpoints, tls, sender, [recipient.address], message)
    assert refused.value.smtp_code == 550
    text = refused.value.smtp_error.decode() if isinstance(refused.value.smtp_error, bytes) else ""
    assert text.startswith("5.7.1") and "1.3(1)" in text


def test_clean_message_delivered(endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = accounts[0], accounts[1]
    message, token = _message(sender.address, recipient.address, "Lịch họp tuần sau")
    _submit(endpoints, tls, sender, [recipient.address], message)
    delivered = _fetch(endpoints, tls, recipient, token)
    _assert_unchanged_except_added_headers(message, delivered)


def test_registration_mail_tagged_and_audited(container, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    account = accounts[0]
    # A fresh sender each run: rspamd greylists a (client, sender, recipient) it has not
    # seen when the score is high, and a greylisted tuple stays "too early" for minutes.
    sender = f"security-{uuid.uuid4().hex[:8]}@facebookmail.com"
    message, token = _message(f"Facebook <{sender}>", account.address, "Xác nhận tài khoản Facebook của bạn")
    _mx(endpoints, sender, [account.address], message)
    delivered = _fetch(endpoints, tls, account, token)
    added = _assert_unchanged_except_added_headers(message, delivered)
    assert any(f.lower().startswith(b"x-qn-policy: tag") and b"1.3(3)" in f for f in added), added
    record = next(r for r in reversed(_audit(container)) if r.get("message_id") == token)
    assert record["verdict"] == "tag" and record["clause"] == "1.3(3)"
    assert record["recipients"] == [account.address]


def test_sieve_redirect_to_gmail_refused_and_logged(container, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    sender, user = accounts[0], accounts[1]
    script = 'require ["copy"];\nredirect :copy "canbo.rieng@gmail.com";\n'
    since = _now(container)
    _exec(container, "doveadm", "sieve", "put", "-u", user.address, "-a", "qnprov-lab-redirect", stdin=script)
    try:
        message, token = _message(sender.address, user.address, "Thư cần chuyển tiếp")
        _submit(endpoints, tls, sender, [user.address], message)
        _fetch(endpoints, tls, user, token)  # the user's own copy is never lost
        deadline = time.monotonic() + DELIVERY_DEADLINE
        log = ""
        while time.monotonic() < deadline:
            log = _maillog(container, since)
            if re.search(r"postfix/reinject/smtpd.*reject: RCPT .*canbo\.rieng@gmail\.com.*1\.3\(2\)", log):
                break
            time.sleep(1)
        assert re.search(r"postfix/reinject/smtpd.*reject: RCPT .*canbo\.rieng@gmail\.com.*1\.3\(2\)", log), log[-3000:]
        assert not QUEUED_TO_GMAIL.search(log), log[-3000:]  # never queued towards Gmail
    finally:
        # deactivate takes no script name; an active script cannot be deleted.
        _exec(container, "doveadm", "sieve", "deactivate", "-u", user.address)
        _exec(container, "doveadm", "sieve", "delete", "-u", user.address, "qnprov-lab-redirect")


def _ldap(container: str, tool: str, *args: str, stdin: str | None = None) -> str:
    """An OpenLDAP client inside the container, bound as the lab's admin DN (password file 0600)."""
    password = (Path(_env("QNPROV_STATE_DIR")) / "secrets" / "ldap_admin").read_text().split()[0]
    _exec(container, "sh", "-c", "umask 077; cat > /root/.qnprov-lab-ldap", stdin=password)
    base = _env("QNPROV_TEST_BASE_DN")
    return _exec(container, tool, "-x", "-H", "ldapi:///", "-D", f"cn=admin,{base}", "-y", "/root/.qnprov-lab-ldap",
                 *args, stdin=stdin)


def _account_dn(container: str, address: str) -> str:
    base = _env("QNPROV_TEST_BASE_DN")
    out = _ldap(container, "ldapsearch", "-LLL", "-b", base, f"(mail={address})", "dn")
    for line in out.splitlines():
        if line.startswith("dn: "):
            return line[4:].strip()
    pytest.fail(f"no LDAP entry for {address}", pytrace=False)


def test_ldap_forward_to_gmail_not_expanded_and_logged(container, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    sender, user = accounts[0], accounts[1]
    dn = _account_dn(container, user.address)
    since = _now(container)
    _ldap(container, "ldapmodify",
          stdin=f"dn: {dn}\nchangetype: modify\nadd: qnMailForward\nqnMailForward: canbo.rieng@gmail.com\n")
    try:
        message, token = _message(sender.address, user.address, "Thư có chuyển tiếp LDAP")
        _submit(endpoints, tls, sender, [user.address], message)
        _fetch(endpoints, tls, user, token)
        time.sleep(2)
        log = _maillog(container, since)
        assert re.search(rf"qnprov 1\.3\(2\): free-mail forward of {re.escape(user.address)} suppressed", log), \
            log[-3000:]
        assert not QUEUED_TO_GMAIL.search(log), log[-3000:]
    finally:
        _ldap(container, "ldapmodify",
              stdin=f"dn: {dn}\nchangetype: modify\ndelete: qnMailForward\nqnMailForward: canbo.rieng@gmail.com\n")


@pytest.mark.parametrize("kind", ["signed-pdf", "smime"])
def test_signed_mail_arrives_byte_identical_with_signature_header(
    endpoints, tls, accounts, kind: str  # type: ignore[no-untyped-def]
) -> None:
    sender, recipient = accounts[0], accounts[1]
    ca = signing_fixtures.make_ca()
    signer = signing_fixtures.make_signer(ca)
    if kind == "signed-pdf":
        message, token = _message(sender.address, recipient.address, "Quyết định ký số",
                                  attachment=("quyetdinh.pdf", "application/pdf", signing_fixtures.signed_pdf(signer)))
    else:
        token = f"<{uuid.uuid4().hex}@policy-lab.test>"
        message = signing_fixtures.smime_signed(signer)
        message = message.replace(b"Message-ID: <signed@quangninh.gov.vn>",
                                  f"Message-ID: {token}\r\nDate: {date_header()}".encode())
        message = message.replace(b"From: vanthu@quangninh.gov.vn", f"From: {sender.address}".encode())
        message = message.replace(b"To: chuyenvien@quangninh.gov.vn", f"To: {recipient.address}".encode())
    _submit(endpoints, tls, sender, [recipient.address], message)
    delivered = _fetch(endpoints, tls, recipient, token)
    added = _assert_unchanged_except_added_headers(message, delivered)
    assert any(f.lower().startswith(b"x-qn-signature:") for f in added), added


def _smtp_codes(exc: Exception) -> list[int]:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return [code for code, _ in exc.recipients.values()]
    assert isinstance(exc, smtplib.SMTPResponseException)
    return [exc.smtp_code]


def test_milter_killed_tempfails_systemd_restarts_and_retry_delivers(container, endpoints, tls, accounts) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = accounts[0], accounts[1]
    restarts = int(_exec(container, "systemctl", "show", "-p", "NRestarts", "--value", "qnprov-milter").strip())
    message, token = _message(sender.address, recipient.address, "Thử lại sau khi milter khởi động lại")
    host, port = endpoints["submission"]
    with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT) as client:
        client.starttls(context=tls)
        client.login(sender.address, sender.password)
        _exec(container, "systemctl", "kill", "--signal=SIGKILL", "qnprov-milter")
        # Postfix applies milter_default_action at the next stage it can answer: RCPT or DATA.
        with pytest.raises((smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused)) as deferred:
            client.sendmail(sender.address, [recipient.address], message)
        assert all(400 <= code < 500 for code in _smtp_codes(deferred.value)), deferred.value
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = int(_exec(container, "systemctl", "show", "-p", "NRestarts", "--value", "qnprov-milter").strip())
        active = _exec(container, "systemctl", "is-active", "qnprov-milter", check=False).strip()
        socket_up = _exec(container, "test", "-S", "/run/qnprov/milter.sock", check=False) == "" and active == "active"
        if now > restarts and socket_up:
            break
        time.sleep(1)
    assert now > restarts, "systemd did not restart the milter"
    for _attempt in range(30):  # the client's retry, as a sending MTA would do
        try:
            _submit(endpoints, tls, sender, [recipient.address], message)
            break
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
            assert all(400 <= code < 500 for code in _smtp_codes(exc)), exc
            time.sleep(1)
    _fetch(endpoints, tls, recipient, token)


@pytest.fixture(scope="module", autouse=True)
def audit_chain_intact_afterwards(container: str) -> Iterator[None]:
    yield
    venv_python = "/opt/qnprov/venv/bin/python"
    result = subprocess.run(["podman", "exec", container, venv_python, "-m", "qnprov.policy.milter_cli", "audit",
                             "verify", AUDIT_DIR], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
