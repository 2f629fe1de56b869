"""A mailbox keeps one copy of a message: the global sieve_before script (issue 10, exactly once).

A copy arrives twice when an MTA stops between queuing a message and replying, or a store
stops after its LMTP delivery but before its reply reaches the MTA. The messages here go
through Dovecot's real LMTP listener (the one Postfix uses), from inside the lab host, so
each case controls exactly what headers and envelope the store sees; the lab-ha drill
``mta-down`` proves the same through real MTAs being stopped.
"""

from __future__ import annotations

import json
import shlex
import uuid

import pytest
import testinfra
from labenv import date_header, require_env

pytestmark = [pytest.mark.lab]

# Deliver one message over LMTP on Postfix's socket; print the server's reply per recipient.
LMTP_CLIENT = """
import json, smtplib, sys
sender, rcpt, message = sys.argv[1], sys.argv[2], sys.argv[3].encode()
lmtp = smtplib.LMTP("/var/spool/postfix/private/dovecot-lmtp")
refused = lmtp.sendmail(sender, [rcpt], message)
lmtp.quit()
print(json.dumps({k: [v[0], v[1].decode()] for k, v in refused.items()}))
"""


@pytest.fixture(scope="module")
def host() -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{require_env('QNPROV_TEST_HOST')}")


@pytest.fixture(scope="module")
def recipient() -> str:
    return str(json.loads(require_env("QNPROV_TEST_ACCOUNTS"))[0]["address"])


def _deliver(host: testinfra.host.Host, sender: str, rcpt: str, headers: dict[str, str]) -> None:
    message = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\nBody of a duplicate test.\r\n"
    cmd = " ".join(shlex.quote(a) for a in ("python3", "-c", LMTP_CLIENT, sender, rcpt, message))
    out = host.run(cmd)
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout) == {}, f"LMTP refused the delivery: {out.stdout}"


def _copies(host: testinfra.host.Host, rcpt: str, subject: str) -> int:
    out = host.run(f"doveadm -f tab search -u {shlex.quote(rcpt)} mailbox INBOX subject {shlex.quote(subject)}")
    assert out.rc == 0, out.stderr
    return len([line for line in out.stdout.splitlines()[1:] if line.strip()])


def _headers(subject: str, message_id: str | None, date: str) -> dict[str, str]:
    headers = {"From": "dup-test@example.org", "To": "someone", "Subject": subject, "Date": date}
    if message_id:
        headers["Message-ID"] = message_id
    return headers


def test_the_same_message_delivered_twice_is_kept_once(host: testinfra.host.Host, recipient: str) -> None:
    token = uuid.uuid4().hex
    headers = _headers(f"dup-same-{token}", f"<{token}@example.org>", date_header())
    _deliver(host, "dup-test@example.org", recipient, headers)
    _deliver(host, "dup-test@example.org", recipient, headers)  # the retry after a lost reply: still 250
    assert _copies(host, recipient, f"dup-same-{token}") == 1


def test_a_known_message_id_cannot_suppress_a_different_message(host: testinfra.host.Host,
                                                                recipient: str) -> None:
    """Someone who learned a Message-ID and sent it first does not make the real message vanish:
    the key also holds the envelope sender and the Date."""
    token = uuid.uuid4().hex
    mid = f"<{token}@example.org>"
    _deliver(host, "attacker@example.net", recipient, _headers(f"dup-spoof-{token}", mid, date_header()))
    _deliver(host, "dup-test@example.org", recipient, _headers(f"dup-spoof-{token}", mid, date_header()))
    _deliver(host, "dup-test@example.org", recipient,
             _headers(f"dup-spoof-{token}", mid, "Mon, 1 Jan 2024 08:00:00 +0700"))
    assert _copies(host, recipient, f"dup-spoof-{token}") == 3


def test_messages_without_message_id_are_never_discarded(host: testinfra.host.Host, recipient: str) -> None:
    token = uuid.uuid4().hex
    headers = _headers(f"dup-noid-{token}", None, date_header())
    _deliver(host, "dup-test@example.org", recipient, headers)
    _deliver(host, "dup-test@example.org", recipient, headers)
    assert _copies(host, recipient, f"dup-noid-{token}") == 2


def test_the_script_is_compiled_in_place(host: testinfra.host.Host) -> None:
    """LMTP runs as vmail and cannot write next to the global script: the deploy compiles it."""
    script = host.file("/etc/dovecot/sieve/qnprov-duplicates.sieve")
    binary = host.file("/etc/dovecot/sieve/qnprov-duplicates.svbin")
    assert script.user == "root" and script.mode == 0o644
    assert binary.exists and binary.mtime >= script.mtime
