"""Clause 1.3(2) on the re-injection listener, end to end in the lab (issue 9 item 3).

Dovecot sends Sieve redirects and vacation replies through the same loopback
listener (``submission_host``), and both may carry the null sender: a vacation
reply always does (RFC 3834), a redirect of a bounce or auto-reply must keep it
(RFC 5228 section 4.2). ``check_sender_access inline:{ <>=permit_mynetworks }`` let
every null-sender message out. Now the policy milter decides null-sender mail at
end of DATA: only an auto-reply addressed to the free-mail recipient leaves.

The lab's outbound relay is pointed at Postfix's ``smtp-sink`` inside the container
(127.0.0.1 only) for this module, so "leaves" is measured where it would happen:
the sink's dump files. Every test is a ``mailflow`` test (the conftest's
no-silent-loss check runs after it).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from labenv import date_header, require_env

pytestmark = [pytest.mark.lab, pytest.mark.mailflow]

SINK_PORT = 2526
SINK_DIR = "/var/tmp/qnprov-test-sink"
SINK_UNIT = "qnprov-test-sink"
DEADLINE = 60.0
SMTP_TIMEOUT = 30.0


def _exec(container: str, *argv: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["podman", "exec", "-i", container, *argv], capture_output=True, text=True,
                            input=stdin, check=False, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed in {container}: {result.stderr[-1000:]}", pytrace=False)
    return result.stdout


@pytest.fixture(scope="module")
def container() -> str:
    return require_env("QNPROV_TEST_HOST")


@pytest.fixture(scope="module")
def accounts() -> list[tuple[str, str]]:
    found = [(str(a["address"]), str(a["password"])) for a in json.loads(require_env("QNPROV_TEST_ACCOUNTS"))]
    assert len(found) >= 2, "the lab needs two accounts"
    return found


@pytest.fixture(scope="module")
def sink(container: str) -> Iterator[str]:
    """smtp-sink on the container's loopback, and Postfix's relayhost pointed at it."""
    previous = _exec(container, "postconf", "-h", "relayhost").strip()
    _exec(container, "systemctl", "stop", SINK_UNIT, check=False)
    _exec(container, "systemctl", "reset-failed", SINK_UNIT, check=False)
    _exec(container, "sh", "-c", f"rm -rf {SINK_DIR} && install -d -o postfix -m 0750 {SINK_DIR}")
    _exec(container, "systemd-run", f"--unit={SINK_UNIT}", "/usr/sbin/smtp-sink", "-u", "postfix",
          "-d", f"{SINK_DIR}/%H%M%S.", f"127.0.0.1:{SINK_PORT}", "16")
    _exec(container, "postconf", "-e", f"relayhost = [127.0.0.1]:{SINK_PORT}")
    _exec(container, "postfix", "reload")
    try:
        yield SINK_DIR
    finally:
        if previous:
            _exec(container, "postconf", "-e", f"relayhost = {previous}")
        else:
            _exec(container, "postconf", "-X", "relayhost")
        _exec(container, "postfix", "reload")
        _exec(container, "systemctl", "stop", SINK_UNIT, check=False)


def _sink_messages(container: str) -> list[str]:
    out = _exec(container, "sh", "-c", f"for f in {SINK_DIR}/*; do [ -f \"$f\" ] && cat \"$f\" && echo; "
                                       "echo '=====qnprov-sink====='; done")
    return [m for m in out.split("=====qnprov-sink=====") if m.strip()]


def _sieve(container: str, user: str, name: str, script: str) -> None:
    _exec(container, "doveadm", "sieve", "put", "-u", user, "-a", name, stdin=script)


def _unsieve(container: str, user: str, name: str) -> None:
    # `doveadm sieve deactivate` takes no script name (with one it exits 64 and the script
    # stays active, answering every later test's mail); an active script cannot be deleted.
    _exec(container, "doveadm", "sieve", "deactivate", "-u", user)
    _exec(container, "doveadm", "sieve", "delete", "-u", user, name)


def _inject(container: str, sender: str, recipient: str, message: EmailMessage) -> None:
    """Local submission inside the container (sendmail -f), the path a delivered message takes
    into Dovecot's Sieve is the same as from port 25; this one is not subject to greylisting."""
    _exec(container, "/usr/sbin/sendmail", "-i", "-f", sender, "--", recipient, stdin=message.as_string())


def _message(sender: str, recipient: str, subject: str) -> tuple[EmailMessage, str]:
    token = make_msgid(domain="reinject-lab.test")
    message = EmailMessage()
    message["From"] = sender or "Mail Delivery System <MAILER-DAEMON@example.org>"
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = date_header()
    message["Message-ID"] = token
    message.set_content(f"Kính gửi đồng chí,\nNội dung kiểm thử {token}.\n")
    return message, token


def _mailbox_has(container: str, user: str, token: str) -> bool:
    out = _exec(container, "doveadm", "search", "-u", user, "mailbox", "INBOX", "header", "Message-ID", token,
                check=False)
    return bool(out.strip())


def _wait(what: str, probe, timeout: float = DEADLINE):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s", pytrace=False)
        time.sleep(1)


def _log_since(container: str, since: str) -> str:
    return _exec(container, "journalctl", "--no-pager", "-o", "short", "--since", since,
                 "-u", "postfix@-", "-u", "postfix", "-u", "dovecot", check=False)


def test_reinjection_listener_refuses_null_sender_mail_to_gmail_at_data(container: str, sink: str) -> None:
    """The issue's reproduction, on the listener itself: MAIL FROM:<> then RCPT TO:<...@gmail.com>."""
    script = (
        "import smtplib,sys\n"
        "s=smtplib.SMTP('127.0.0.1',10027,local_hostname='mail1.quangninh.test',timeout=30)\n"
        "s.ehlo()\n"
        "print(s.mail('')[0])\n"
        "print(s.rcpt('someone@gmail.com')[0])\n"
        "code, text = s.data(b'From: x@quangninh.test\\r\\nTo: someone@gmail.com\\r\\n'"
        "b'Subject: fwd\\r\\n\\r\\nbody\\r\\n')\n"
        "print('DATA', code, text.decode())\n"
        "s.quit()\n"
    )
    out = _exec(container, "python3", "-c", script).splitlines()
    assert out[0] == "250"
    assert out[2].startswith("DATA 550 5.7.1") and "1.3(2)" in out[2], out
    assert not any("someone@gmail.com" in m for m in _sink_messages(container))


def test_sieve_redirect_of_null_sender_mail_to_gmail_never_leaves_and_is_kept(  # type: ignore[no-untyped-def]
        container: str, sink: str, accounts) -> None:
    user = accounts[1][0]
    target = f"canbo.rieng.{uuid.uuid4().hex[:8]}@gmail.com"
    since = _exec(container, "date", "+%Y-%m-%d %H:%M:%S").strip()
    _sieve(container, user, "qnprov-lab-null-redirect", f'redirect "{target}";\n')
    try:
        # A delivery report: null envelope sender, as a bounce from outside would be.
        message, token = _message("", user, "Undelivered Mail Returned to Sender")
        message["Auto-Submitted"] = "auto-replied"
        message.replace_header("To", target)  # even a message that looks like a reply to the target
        _inject(container, "", user, message)
        # Dovecot keeps the message when the redirect is refused: nothing is lost.
        _wait(f"{token} kept in {user}'s INBOX", lambda: _mailbox_has(container, user, token))
        log = _wait("the milter's 1.3(2) refusal in the mail log", lambda: (lambda text: text if re.search(
            rf"milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: 5\.7\.1 .*1\.3\(2\).*; "
            rf"from=<> to=<{re.escape(target)}>",
            text) else "")(_log_since(container, since)))
        assert not re.search(rf"\b[0-9A-F]{{6,}}: to=<{re.escape(target)}>", log), log[-3000:]
        assert re.search(r"redirect action: failed to redirect .*550 5\.7\.1", log), log[-3000:]
        assert "implicit keep was successful" in log, log[-3000:]
        time.sleep(3)
        assert not any(target in m for m in _sink_messages(container))
    finally:
        _unsieve(container, user, "qnprov-lab-null-redirect")


def test_vacation_reply_to_a_citizen_at_gmail_reaches_the_relay(  # type: ignore[no-untyped-def]
        container: str, sink: str, accounts) -> None:
    user = accounts[1][0]
    citizen = f"congdan.{uuid.uuid4().hex[:8]}@gmail.com"
    _sieve(container, user, "qnprov-lab-vacation",
           'require ["vacation"];\nvacation :days 1 :subject "Tự động trả lời: nghỉ phép" '
           '"Tôi đang nghỉ phép, sẽ trả lời khi trở lại.";\n')
    try:
        message, token = _message(citizen, user, "Hỏi về thủ tục cấp phép")
        _inject(container, citizen, user, message)
        _wait(f"{token} in {user}'s INBOX", lambda: _mailbox_has(container, user, token))
        reply = _wait(f"the vacation reply to {citizen} at the sink", lambda: next(
            (m for m in _sink_messages(container) if f"<{citizen}>" in m and "Auto-Submitted" in m), ""))
        assert re.search(r"(?mi)^X-Mail-Args: <>", reply), reply[:1500]  # MAIL FROM:<>, the null sender
        assert re.search(rf"(?mi)^X-Rcpt-Args: <{re.escape(citizen)}>", reply), reply[:1500]
        assert re.search(r"(?mi)^Auto-Submitted: auto-replied", reply), reply[:1500]
        assert re.search(rf"(?mi)^In-Reply-To: {re.escape(token)}", reply), reply[:1500]
        assert "X-Sieve-Redirected-From" not in reply
    finally:
        _unsieve(container, user, "qnprov-lab-vacation")


def test_smtp_sink_and_relay_really_carry_null_sender_mail(container: str, sink: str) -> None:
    """The counterpart of the refusals above: the sink path delivers a null-sender message to
    a non-free-mail outside domain, so "nothing at the sink" means refused, not broken."""
    target = f"vanthu.{uuid.uuid4().hex[:8]}@hanoi.gov.vn"
    message, _ = _message("", target, "Báo cáo chuyển phát")
    _exec(container, "/usr/sbin/sendmail", "-i", "-f", "", "--", target, stdin=message.as_string())
    _wait(f"{target} at the sink", lambda: any(target in m for m in _sink_messages(container)))
