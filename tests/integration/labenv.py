"""What the integration suites read from the environment of a deployed host.

``qnprov.lab.test_environment`` writes these variables (the conftest's lab
fixture, or molecule's verify step); a missing one fails the test, never skips.
"""

from __future__ import annotations

import os
import smtplib
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

VIETNAM = timezone(timedelta(hours=7))
# rspamd greylists for five minutes; a real MTA's first retries fall well inside this.
OUTSIDE_RETRY_DEADLINE = 420.0


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: bring the lab up (qnprov lab up, or run through "
                    "tests/integration/conftest.py) or export it", pytrace=False)
    return value


def date_header() -> str:
    """The current time as an RFC 5322 Date, in the province's zone (a stale Date scores DATE_IN_PAST)."""
    return format_datetime(datetime.now(VIETNAM))


def send_from_outside(host: str, port: int, sender: str, recipients: list[str], message: bytes, *,
                      helo: str = "mx.example.org", deadline: float = OUTSIDE_RETRY_DEADLINE) -> int:
    """Deliver as a real outside MTA would: a 4xx is retried (RFC 5321 §4.5.4.1) until ``deadline`` seconds.

    Returns the number of attempts. A 5xx, or a 4xx still answered at the
    deadline, raises smtplib's own exception with the server's reply.
    """
    give_up = time.monotonic() + deadline
    delay, attempts = 10.0, 0
    while True:
        attempts += 1
        try:
            # An outside MTA names itself; a bare-IP HELO scores HFILTER_HELO_BADIP in rspamd.
            with smtplib.SMTP(host, port, local_hostname=helo, timeout=60) as client:
                refused = client.sendmail(sender, recipients, message)
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
            return attempts
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused) as error:
            if not _temporary(error) or time.monotonic() + delay > give_up:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 60.0)


def _temporary(error: smtplib.SMTPException) -> bool:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in error.recipients.values())
    code = getattr(error, "smtp_code", 0)
    return 400 <= code < 500
