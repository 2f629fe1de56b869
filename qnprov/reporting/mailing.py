"""Mail a rendered report to the people who must act on it (an agency head gets the
report built with ``--agency``: their agency's figures only).

Plain SMTP to the local MTA (``--smtp``, default ``127.0.0.1:25``): the report travels as
an attachment like any other official mail, through the same milter and the same
audit trail. No credentials: the MTA accepts local mail from loopback.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from qnprov.errors import ExternalError, InputError

_SUBTYPES = {"html": "html", "json": "json", "csv": "csv"}
_MAINTYPES = {"html": "text", "json": "application", "csv": "text"}
SUBJECTS = {"vi": "Báo cáo tuân thủ thư điện tử công vụ", "en": "Official mail compliance report"}
BODIES = {
    "vi": "Báo cáo tuân thủ kỳ {period}{agency} được đính kèm ({name}). Báo cáo chỉ chứa số đếm, mã quy tắc "
          "và địa chỉ; không chứa nội dung thư.\n",
    "en": "The compliance report for {period}{agency} is attached ({name}). It holds counts, rule IDs and "
          "addresses only; never message contents.\n",
}


def report_message(text: str, *, fmt: str, filename: str, period: str, agency: str | None, lang: str,
                   sender: str, recipients: Sequence[str]) -> EmailMessage:
    if not recipients:
        raise InputError("--mail-to needs at least one address")
    for address in (sender, *recipients):
        if "@" not in address or any(c in address for c in "\r\n,;<>\" "):
            raise InputError(f"not a plain mail address: {address!r}")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    label = f" · {agency}" if agency else ""
    message["Subject"] = f"{SUBJECTS[lang]} {period}{label}"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(BODIES[lang].format(period=period, agency=label, name=filename))
    if _MAINTYPES[fmt] == "text":  # a str part carries charset=utf-8
        message.add_attachment(text, subtype=_SUBTYPES[fmt], filename=filename)
    else:
        message.add_attachment(text.encode("utf-8"), maintype=_MAINTYPES[fmt], subtype=_SUBTYPES[fmt],
                               filename=filename)
    return message


def send(message: EmailMessage, smtp: str, *, timeout: float = 60.0) -> None:
    host, _, port = smtp.rpartition(":") if ":" in smtp else (smtp, "", "25")
    try:
        with smtplib.SMTP(host, int(port), timeout=timeout) as client:
            client.send_message(message)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        raise ExternalError(f"mailing the report through {smtp}: {exc}") from exc
