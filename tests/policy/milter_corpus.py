"""Messages shared by the milter, Postfix-harness and benchmark tests (built, not committed)."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

DOMAIN = "quangninh.test"
OFFICIAL = f"chuyenvien@{DOMAIN}"
COLLEAGUE = f"lanhdao@{DOMAIN}"


def overrides_yaml(*, extra: str = "") -> str:
    return f"local_domains: [{DOMAIN}]\n{extra}"


def date_header() -> str:
    """Now, in the province's zone: every message through a real stack carries the current date."""
    return format_datetime(datetime.now(timezone(timedelta(hours=7))))


def write_overrides(directory: Path, *, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "overrides.yml"
    path.write_text(overrides_yaml(extra=extra), encoding="utf-8")
    return path


def _base(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash((sender, to, subject)))}@test.qnprov>"
    message["Date"] = date_header()
    message.set_content(body)
    return message


def clean_internal() -> bytes:
    return _base(OFFICIAL, COLLEAGUE, "Lịch họp tuần sau", "Kính gửi anh, lịch họp như sau.\nTrân trọng./.\n").as_bytes(
        policy=SMTP)


def marked_subject() -> bytes:
    return _base(OFFICIAL, COLLEAGUE, "[MẬT] Báo cáo tình hình", "Nội dung kèm theo.\n").as_bytes(policy=SMTP)


def docx_bytes(paragraphs: list[str]) -> bytes:
    """A minimal but valid .docx (WordprocessingML in a zip), made with zipfile."""
    body = "".join(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" for text in paragraphs)
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )
    content_types = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        "</Types>"
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="word/document.xml"/></Relationships>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", rels)
        archive.writestr("word/document.xml", document)
    return buffer.getvalue()


def with_docx(paragraphs: list[str], *, subject: str = "Gửi tài liệu", recipient: str = COLLEAGUE) -> bytes:
    message = _base(OFFICIAL, recipient, subject, "Gửi anh tài liệu đính kèm.\n")
    message.add_attachment(
        docx_bytes(paragraphs), maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document", filename="baocao.docx",
    )
    return message.as_bytes(policy=SMTP)


def marked_docx() -> bytes:
    return with_docx(["UBND TỈNH QUẢNG NINH", "Số: 15/BC-UBND", "TỐI MẬT", "Báo cáo tình hình an ninh."])


def lookalike_docx() -> bytes:
    return with_docx(["Hướng dẫn đổi mật khẩu và bảo mật tài khoản.", "Mật độ dân số; mật ong."])


def registration() -> bytes:
    message = _base("Facebook <security@facebookmail.com>", OFFICIAL, "Xác nhận tài khoản Facebook của bạn",
                    "Mã xác minh của bạn là 123456.\n")
    return message.as_bytes(policy=SMTP)


def many_parts(count: int) -> bytes:
    message = _base(OFFICIAL, COLLEAGUE, "Nhiều phần", "phần đầu\n")
    message.make_mixed()
    for number in range(count):
        part = EmailMessage()
        part.set_content(f"phần {number}\n")
        message.attach(part)
    return message.as_bytes(policy=SMTP)


def large_text(lines: int = 8000) -> bytes:
    """About 14 MB of ordinary text per 8000 lines: slow enough to overrun a short timeout."""
    line = "Kính gửi các đồng chí, lịch họp tuần sau như sau. " * 20 + "\n"
    return _base(OFFICIAL, COLLEAGUE, "Văn bản dài", line * lines).as_bytes(policy=SMTP)
