"""A generated corpus for the 1.3(1) and 1.3(3) detectors: real-looking mail, by class.

Every message is built with the standard library's ``email`` package (multipart
alternatives, HTML bodies, quoted-printable, base64 and 8-bit transfer encodings,
Vietnamese in RFC 2047 subjects), and attachments with the same builders as the rest of
the policy corpus (python-docx, openpyxl, PyMuPDF, reportlab). Nothing is committed as a binary.

Classes and what the detector must answer:

1.3(3) registration (``registration_corpus``)
    positives, expected category: ``vn-ecommerce`` and ``global-ecommerce`` (e-commerce),
    ``forum`` and ``global-discussion`` (forum), ``messaging``, ``social`` (social
    network), ``unknown-service`` and ``unaccented-signup`` (sign-ups typed without
    diacritics, some through an ESP; unknown, for review);
    negatives, never flagged: ``gov-portal`` (the national public-service portal's
    organisation account), ``gov-event`` (event registrations from other provinces' and
    ministries' gov.vn), ``press-release`` (an e-commerce company's PR address),
    ``official-mail``, ``newsletter`` (newsletter issues, not sign-ups), ``citizen``,
    ``meeting-registration`` (a ministry's meeting on zoom.us: attendance),
    ``gov-password-reset`` (government systems' OTP/password mail, also relayed).

1.3(1) markings (``marking_corpus``)
    positives, expected level: ``spaced-stamp`` (letter-spaced, any space, case, NFC/NFD),
    ``spaced-stamp-pdf``, ``multi-level-stamp``, ``multi-level-metadata``, ``plain-stamp``,
    ``char-spaced-pdf`` (reportlab Tc/Tw character spacing, extracted in fragments, or
    one glyph per line when the spacing is as wide as the font),
    ``stamp-in-filename`` (RFC 2231 names, "_" separators, NFD), ``title-case-stamp``,
    ``encoded-stamp`` (HTML character references, split RFC 2047 Q subjects, message/rfc822,
    one docx run per letter), ``metadata-stamp`` (an xlsx sheet name, OOXML core
    properties written by openpyxl and python-docx, an ODF meta.xml keyword);
    negatives: ``training-text``, ``lookalike-words``, ``official-mail``, ``specimen-stamps``
    (a row of the three specimen stamps under an explanation), ``char-spaced-words``
    (letter- and word-spaced "BẢO MẬT", "MẬT KHẨU", "TÀI LIỆU MẬT" ..., which PyMuPDF breaks
    over lines), ``metadata-words`` (ordinary words in the same sheet names and properties).

The same generator feeds ``test_detector_corpus.py`` (per-class assertions) and
``benchmarks/detector_quality.py`` (recall and false positives against the goals).
"""

from __future__ import annotations

import io
import random
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from policy_corpus import docx, docx_runs, odt, pdf

from qnprov.policy.engine import Envelope

OFFICIAL = "chuyenvien@quangninh.gov.vn"
COLLEAGUE = "vanthu@quangninh.gov.vn"
ICT = timezone(timedelta(hours=7))

REGISTRATION_POSITIVE = ("vn-ecommerce", "global-ecommerce", "forum", "global-discussion", "messaging", "social",
                         "unknown-service", "unaccented-signup")
REGISTRATION_NEGATIVE = ("gov-portal", "gov-event", "press-release", "official-mail", "newsletter", "citizen",
                         "meeting-registration", "gov-password-reset")
MARKING_POSITIVE = ("spaced-stamp", "spaced-stamp-pdf", "multi-level-stamp", "multi-level-metadata", "plain-stamp",
                    "char-spaced-pdf", "stamp-in-filename", "title-case-stamp", "encoded-stamp", "metadata-stamp")
MARKING_NEGATIVE = ("training-text", "lookalike-words", "official-mail", "specimen-stamps", "char-spaced-words",
                    "metadata-words")


@dataclass(frozen=True)
class Sample:
    clause: str  # "1.3(1)" or "1.3(3)"
    cls: str
    raw: bytes
    envelope: Envelope
    #: 1.3(3): a category of registration.CATEGORIES, "unknown", or "" (not a sign-up);
    #: 1.3(1): the level ("Tối mật" ...) or "" (no marking).
    expect: str
    note: str


# -- message building --------------------------------------------------------------------


def build_mail(sender: tuple[str, str], subject: str, text: str, *, html: str | None = None,
               to: str = OFFICIAL, cte: str = "base64", headers: dict[str, str] | None = None,
               dkim_domain: str | None = None, attachments: list[tuple[str, str, bytes]] | None = None,
               when: datetime | None = None) -> bytes:
    """One message: text (and HTML) body in the given transfer encoding, optional attachments."""
    name, address = sender
    local, _, domain = address.partition("@")
    message = EmailMessage()
    message["From"] = Address(name, local, domain) if name else address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(when or datetime.now(ICT))
    message["Message-ID"] = make_msgid(domain=domain)
    message["MIME-Version"] = "1.0"
    for key, value in (headers or {}).items():
        message[key] = value
    if dkim_domain:
        message["DKIM-Signature"] = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={dkim_domain}; s=s2048; "
                                     "h=from:to:subject:date:message-id; "
                                     "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; "
                                     "b=dGVzdCBzaWduYXR1cmUgb25seQ==")
    message.set_content(text, cte=cte)
    if html is not None:
        message.add_alternative(html, subtype="html", cte="quoted-printable" if cte == "base64" else "base64")
    for filename, ctype, data in attachments or []:
        maintype, _, subtype = ctype.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=SMTP)


def _html(paragraphs: list[str], button: str | None = None, footer: str = "") -> str:
    body = "".join(f"<p style=\"margin:0 0 12px\">{p}</p>" for p in paragraphs)
    if button:
        body += (f"<table role=\"presentation\"><tr><td style=\"background:#ee4d2d\">"
                 f"<a href=\"https://example.invalid/verify?t=8f2a\" style=\"color:#fff\">{button}</a>"
                 "</td></tr></table>")
    if footer:
        body += f"<p style=\"font-size:11px;color:#888\">{footer}</p>"
    return f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>{body}</body></html>"


def _bulk(rng: random.Random, domain: str, *, unsubscribe: bool = True) -> dict[str, str]:
    headers = {}
    if unsubscribe:
        headers["List-Unsubscribe"] = f"<mailto:unsubscribe@{domain}>, <https://{domain}/unsub?u={rng.randrange(10**8)}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    choice = rng.randrange(3)
    if choice == 0:
        headers["Precedence"] = "bulk"
    elif choice == 1:
        headers["Auto-Submitted"] = "auto-generated"
    else:
        headers["Feedback-ID"] = f"{rng.randrange(10**6)}:account:{domain.split('.')[0]}"
    return headers


def _code(rng: random.Random) -> str:
    return f"{rng.randrange(10**5, 10**6)}"


# -- 1.3(3): sign-ups ----------------------------------------------------------------------

# (service name, sender address, envelope sender, DKIM d=) per positive class.
SERVICES: dict[str, list[tuple[str, str, str, str | None]]] = {
    "vn-ecommerce": [
        ("Tiki", "no-reply@tiki.vn", "bounce@em.tiki.vn", "tiki.vn"),
        ("Sendo", "noreply@sendo.vn", "bounces+1234@sendgrid.net", "sendo.vn"),
        ("Thế Giới Di Động", "cskh@thegioididong.com", "bounce@thegioididong.com", "thegioididong.com"),
        ("Chợ Tốt", "no-reply@chotot.com", "bounce@mail.chotot.com", None),
        ("Shopee", "no-reply@mail.shopee.vn", "bounce@mail.shopee.vn", "mail.shopee.vn"),
    ],
    "global-ecommerce": [
        ("Amazon", "account-update@amazon.com", "20261206-bounce@amazonses.com", "amazon.com"),
        ("eBay", "ebay@ebay.com", "bounce@reply.ebay.com", "ebay.com"),
        ("AliExpress", "no-reply@notice.aliexpress.com", "bounce@notice.aliexpress.com", "aliexpress.com"),
        ("Temu", "temu@eu.temuemail.com", "bounce@eu.temuemail.com", "temuemail.com"),
    ],
    "forum": [
        ("VOZ", "noreply@voz.vn", "noreply@voz.vn", None),
        ("Tinh tế", "no-reply@tinhte.vn", "bounce@tinhte.vn", "tinhte.vn"),
        ("OTOFUN", "otofun@otofun.net", "otofun@otofun.net", None),
        ("Webtretho", "noreply@webtretho.com", "noreply@webtretho.com", None),
    ],
    "global-discussion": [
        ("Reddit", "noreply@redditmail.com", "bounce@redditmail.com", "redditmail.com"),
        ("Quora", "noreply@quora.com", "bounce@quora.com", "quora.com"),
        ("Stack Overflow", "do-not-reply@stackoverflow.email", "bounce@stackoverflow.email", "stackoverflow.email"),
    ],
    "messaging": [
        ("Discord", "noreply@discord.com", "bounces@discord.com", "discord.com"),
        ("Zalo", "no-reply@zalo.me", "no-reply@zalo.me", "zalo.me"),
        ("Telegram", "noreply@telegram.org", "noreply@telegram.org", "telegram.org"),
        ("Slack", "feedback@slack.com", "bounce@slack.com", "slack.com"),
    ],
    "social": [
        ("Facebook", "security@facebookmail.com", "notification@facebookmail.com", "facebookmail.com"),
        ("TikTok", "no-reply@account.tiktok.com", "bounce@account.tiktok.com", "account.tiktok.com"),
        ("LinkedIn", "security-noreply@linkedin.com", "s-abc@bounce.linkedin.com", "linkedin.com"),
        ("Instagram", "no-reply@mail.instagram.com", "bounce@mail.instagram.com", "mail.instagram.com"),
    ],
    # Real services the maintained list does not carry: reported "unknown, for review".
    "unknown-service": [
        ("VieON", "no-reply@vieon.vn", "bounce@vieon.vn", "vieon.vn"),
        ("Canva", "no-reply@canva.com", "bounces@engage.canva.com", "canva.com"),
        ("Duolingo", "hello@duolingo.com", "bounce@duolingo.com", None),
        ("Học Trực Tuyến 24h", "taikhoan@hoctructuyen24h.edu.vn", "taikhoan@hoctructuyen24h.edu.vn", None),
        ("Booking.com", "noreply@booking.com", "bounce@mailer.booking.com", "booking.com"),
    ],
}
EXPECTED_CATEGORY = {"vn-ecommerce": "ecommerce", "global-ecommerce": "ecommerce", "forum": "forum",
                     "global-discussion": "forum", "messaging": "messaging", "social": "social",
                     "unknown-service": "unknown"}
# Sign-up mail typed without diacritics (many Vietnamese systems still send it so), from
# listed and unlisted services, some through an ESP (SendGrid, Amazon SES, Mailchimp); the
# last field is the expected category.
UNACCENTED = [
    ("Hasaki", "no-reply@hasaki.vn", "bounces+1234@sendgrid.net", "Xac nhan dang ky tai khoan Hasaki",
     "Chao ban, vui long nhan vao lien ket de xac nhan dia chi email cua ban.", {"X-SG-EID": "k2a9"}, "ecommerce"),
    ("Lotus Chat", "cskh@lotuschat.vn", "cskh@lotuschat.vn", "Ma kich hoat Lotus Chat",
     "Ma kich hoat cua ban la 482913. Ma co hieu luc trong 5 phut.", {}, "unknown"),
    ("Dien dan O to", "admin@otosaigon.example", "admin@otosaigon.example", "Kich hoat tai khoan dien dan",
     "Cam on ban da dang ky thanh vien. Vui long kich hoat tai khoan.", {"Precedence": "bulk"}, "unknown"),
    ("Notion", "notify@mail.notion.so", "0100abc@amazonses.com", "Your Notion signup code",
     "Here is your signup code: 305112", {"X-SES-Outgoing": "2026.12.06-54.240.1.1"}, "unknown"),
    ("Gapo", "no-reply@gapo.vn", "bounce@gapo.vn", "Chao mung ban den voi Gapo",
     "Tai khoan Gapo cua ban da duoc tao thanh cong.", {"List-Unsubscribe": "<mailto:u@gapo.vn>"}, "social"),
]


def _signup_vi(rng: random.Random, name: str, domain: str) -> tuple[str, str, str, str]:
    """(subject, text, html, kind) for one Vietnamese sign-up mail."""
    code = _code(rng)
    user = rng.choice(["chuyenvien.qn", "vanthu_stttt", "nguyenvana83"])
    kind = rng.choice(["verify", "otp", "welcome", "activate"])
    if kind == "verify":
        subject = rng.choice([f"Xác thực địa chỉ email cho tài khoản {name}", f"[{name}] Xác nhận email của bạn",
                              f"{name}: vui lòng xác minh email"])
        lines = [f"Chào {user},", f"Cảm ơn bạn đã đăng ký tài khoản {name}.",
                 "Vui lòng nhấn vào nút bên dưới để xác nhận địa chỉ email của bạn. Liên kết có hiệu lực trong 24 giờ.",
                 "Nếu bạn không thực hiện đăng ký này, hãy bỏ qua email."]
        button = "Xác nhận email"
    elif kind == "otp":
        subject = rng.choice([f"{code} là mã OTP đăng ký {name} của bạn", f"Mã xác thực {name}",
                              f"[{name}] Mã xác minh tài khoản"])
        lines = [f"Mã OTP của bạn là: {code}",
                 "Mã có hiệu lực trong 5 phút. Tuyệt đối không chia sẻ mã này cho bất kỳ ai.",
                 f"Đội ngũ {name}"]
        button = None
    elif kind == "welcome":
        subject = rng.choice([f"Chào mừng bạn đến với {name}!", f"Chào mừng {user} gia nhập cộng đồng {name}"])
        lines = [f"Xin chào {user},", f"Tài khoản {name} của bạn đã được tạo thành công.",
                 f"Tên đăng nhập: {user}", "Hãy hoàn thiện hồ sơ để bắt đầu."]
        button = "Bắt đầu"
    else:
        subject = rng.choice([f"Kích hoạt tài khoản {name}", f"Hoàn tất đăng ký tài khoản tại {name}"])
        lines = ["Chào bạn,", f"Bạn vừa đăng ký thành viên tại {name} bằng địa chỉ email này.",
                 "Vui lòng kích hoạt tài khoản bằng cách nhấn vào liên kết bên dưới:",
                 f"https://{domain}/kich-hoat?token={rng.randrange(10**12):x}"]
        button = "Kích hoạt tài khoản"
    text = "\n".join(lines) + "\n"
    footer = f"© {datetime.now(ICT).year} {name}. Email này được gửi tự động, vui lòng không trả lời."
    html = _html(lines, button, footer=footer)
    return subject, text, html, kind


def _signup_en(rng: random.Random, name: str, domain: str) -> tuple[str, str, str, str]:
    code = _code(rng)
    user = rng.choice(["qn_officer", "vanthu2026", "nguyen.a"])
    kind = rng.choice(["verify", "otp", "welcome", "confirm"])
    if kind == "verify":
        subject = rng.choice([f"Verify your new {name} account", f"Verify Email Address for {name}",
                              f"Verify your {name} email address"])
        lines = [f"Hi {user},", f"Thanks for signing up for {name}!",
                 "Please verify your email address by clicking the button below.",
                 "If you didn't create an account, you can safely ignore this email."]
        button = "Verify Email"
    elif kind == "otp":
        subject = rng.choice([f"{code} is your {name} verification code", f"Your {name} security code",
                              f"{name} confirmation code: {code}"])
        lines = ["To verify your email address, please use the following One Time Password (OTP):", code,
                 "Do not share this OTP with anyone.", f"Thank you for shopping with {name}!"]
        button = None
    elif kind == "welcome":
        subject = rng.choice([f"Welcome to {name}", f"Welcome to {name}, {user}!"])
        lines = [f"Hi {user},", f"Your {name} account has been created.", f"Username: {user}",
                 "Log in any time to update your profile."]
        button = "Go to your account"
    else:
        subject = rng.choice([f"Confirm your email for {name}", f"Account confirmation required - {name}",
                              f"Please complete your registration at {name}"])
        lines = [f"Dear {user},",
                 f"In order to complete your registration at {name}, please confirm your email address:",
                 f"https://{domain}/account-confirmation/{rng.randrange(10**10):x}",
                 "If you did not register, no further action is required."]
        button = "Confirm"
    text = "\n".join(lines) + "\n"
    html = _html(lines, button, footer=f"This message was sent to you by {name}. Please do not reply.")
    return subject, text, html, kind


def registration_corpus(seed: int = 13, per_class: int = 8) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    for cls in (cls for cls in REGISTRATION_POSITIVE if cls in SERVICES):
        for index in range(per_class):
            name, address, bounce, dkim = SERVICES[cls][index % len(SERVICES[cls])]
            domain = address.partition("@")[2]
            vietnamese = (cls in {"vn-ecommerce", "forum", "unknown-service"} and index % 3 != 2) or index % 4 == 1
            subject, text, html, kind = (_signup_vi if vietnamese else _signup_en)(rng, name, domain)
            layout = index % 3  # 0: text+HTML, 1: HTML only, 2: plain text only
            headers = _bulk(rng, domain, unsubscribe=index % 2 == 0) if index % 4 != 3 else {}
            cte = ["base64", "quoted-printable", "8bit"][rng.randrange(3)]
            if layout == 1:
                raw = _html_only(sender=(name, address), subject=subject, html=html, headers=headers, dkim_domain=dkim,
                                 cte=cte)
            else:
                raw = build_mail((name, address), subject, text, html=html if layout == 0 else None, cte=cte,
                                 headers=headers, dkim_domain=dkim)
            samples.append(Sample("1.3(3)", cls, raw, Envelope(bounce, (OFFICIAL,)), EXPECTED_CATEGORY[cls],
                                  f"{name} {kind} ({'vi' if vietnamese else 'en'}, layout {layout}, {cte})"))
    for index in range(per_class):
        name, address, bounce, subject, text, headers, category = UNACCENTED[index % len(UNACCENTED)]
        raw = build_mail((name, address), subject, text + "\n", headers=headers,
                         cte=["base64", "quoted-printable", "8bit"][index % 3])
        samples.append(Sample("1.3(3)", "unaccented-signup", raw, Envelope(bounce, (OFFICIAL,)), category,
                              f"{name}: {subject}"))
    for cls in REGISTRATION_NEGATIVE:
        for index in range(per_class):
            raw, envelope, note = NEGATIVE_BUILDERS[cls](rng, index)
            samples.append(Sample("1.3(3)", cls, raw, envelope, "", note))
    return samples


def _html_only(*, sender: tuple[str, str], subject: str, html: str, headers: dict[str, str], dkim_domain: str | None,
               cte: str) -> bytes:
    name, address = sender
    local, _, domain = address.partition("@")
    message = EmailMessage()
    message["From"] = Address(name, local, domain)
    message["To"] = OFFICIAL
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(ICT))
    message["Message-ID"] = make_msgid(domain=domain)
    for key, value in headers.items():
        message[key] = value
    if dkim_domain:
        message["DKIM-Signature"] = f"v=1; a=rsa-sha256; d={dkim_domain}; s=k1; h=from:subject; bh=x; b=y"
    message.set_content(html, subtype="html", cte=cte)
    return message.as_bytes(policy=SMTP)


def _gov_portal(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    code = _code(rng)
    subject = rng.choice(["Xác nhận đăng ký tài khoản tổ chức trên Cổng Dịch vụ công quốc gia",
                          f"Mã xác thực đăng ký tài khoản tổ chức: {code}",
                          "Kích hoạt tài khoản tổ chức - Cổng Dịch vụ công quốc gia",
                          "Chào mừng bạn đến với Cổng Dịch vụ công quốc gia"])
    lines = ["Kính gửi Quý tổ chức: Sở Khoa học và Công nghệ tỉnh Quảng Ninh,",
             f"Mã OTP của Quý tổ chức là: {code}. Vui lòng nhấn vào liên kết để xác nhận địa chỉ email của bạn.",
             "Tài khoản tổ chức của bạn đã được tạo trên Cổng Dịch vụ công quốc gia (dichvucong.gov.vn).",
             "Đây là thư tự động, vui lòng không trả lời."]
    sender = rng.choice([("Cổng Dịch vụ công quốc gia", "no-reply@dichvucong.gov.vn"),
                         ("Cổng DVC quốc gia", "hotro@dichvucong.gov.vn")])
    raw = build_mail(sender, subject, "\n".join(lines), html=_html(lines, "Xác nhận") if index % 2 else None,
                     headers={"Auto-Submitted": "auto-generated"}, dkim_domain="dichvucong.gov.vn")
    return raw, Envelope("bounce@dichvucong.gov.vn", (OFFICIAL,)), f"portal: {subject}"


GOV_ORGANISERS = [("Văn phòng Bộ Khoa học và Công nghệ", "vanphong@most.gov.vn"),
                  ("Sở Thông tin và Truyền thông Hà Nội", "stttt@hanoi.gov.vn"),
                  ("Bộ Nội vụ", "hoinghi@moha.gov.vn"),
                  ("UBND tỉnh Bắc Ninh", "vanthu@bacninh.gov.vn"),
                  ("Cục An toàn thông tin", "sukien@ais.gov.vn")]


def _gov_event(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    name, address = GOV_ORGANISERS[index % len(GOV_ORGANISERS)]
    event = rng.choice(["Hội nghị triển khai chuyển đổi số năm 2027", "Hội thảo An toàn thông tin khu vực phía Bắc",
                        "Diễn đàn Chính quyền số"])
    subject = rng.choice([f"Xác nhận đăng ký tham dự {event}", f"Xác nhận đăng ký: {event}",
                          f"Confirmation of registration: {event}", f"Mã đăng ký tham dự {event}"])
    lines = ["Kính gửi Quý đại biểu,", f"Ban Tổ chức xác nhận Quý đại biểu đã đăng ký tham dự {event}.",
             f"Mã đăng ký: QN-{_code(rng)}. Vui lòng xác nhận tham dự và mang theo mã QR khi check-in.",
             "Trân trọng./."]
    raw = build_mail((name, address), subject, "\n".join(lines), html=_html(lines) if index % 2 else None,
                     headers={"Precedence": "bulk"} if index % 3 == 0 else None)
    return raw, Envelope(address, (OFFICIAL,)), f"{address}: {subject}"


def _press_release(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    company, address = [("Tiki", "pr@tiki.vn"), ("Shopee Việt Nam", "press@shopee.vn"),
                        ("Sendo", "truyenthong@sendo.vn"), ("Lazada Việt Nam", "media@lazada.vn")][index % 4]
    subject = rng.choice([f"Thông cáo báo chí: {company} ra mắt chương trình hỗ trợ nông sản Quảng Ninh",
                          f"[Press Release] {company} công bố kết quả kinh doanh quý III",
                          f"{company} hợp tác cùng tỉnh Quảng Ninh phát triển thương mại điện tử",
                          f"THÔNG CÁO BÁO CHÍ - {company} đạt 10 triệu người dùng"])
    lines = [f"Hà Nội, ngày {rng.randrange(1, 28)}/11/2026 – {company} hôm nay công bố chương trình mới.",
             "Hơn 1 triệu người dùng mới đã đăng ký tài khoản và xác thực tài khoản qua VNeID trong quý.",
             "Người bán có thể tạo tài khoản và kích hoạt tài khoản cửa hàng miễn phí đến hết năm.",
             f"Liên hệ báo chí: {address}"]
    raw = build_mail((f"{company} - Truyền thông", address), subject, "\n".join(lines),
                     html=_html(lines) if index % 2 else None, headers=_bulk(rng, address.partition("@")[2]),
                     dkim_domain=address.partition("@")[2])
    return raw, Envelope(address, (OFFICIAL,)), f"{address}: {subject}"


def _official(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    name, address = GOV_ORGANISERS[index % len(GOV_ORGANISERS)]
    subject = rng.choice(["V/v báo cáo kết quả triển khai tài khoản định danh điện tử",
                          "V/v đề nghị cung cấp thông tin tài khoản quản trị hệ thống",
                          "Giấy mời họp trực tuyến", "V/v hướng dẫn đổi mật khẩu và xác thực hai lớp"])
    lines = ["Kính gửi: Sở Khoa học và Công nghệ tỉnh Quảng Ninh",
             "Thực hiện Kế hoạch số 15/KH-UBND, đề nghị Quý cơ quan xác nhận danh sách tài khoản của cán bộ "
             "và gửi về trước ngày 15/12.", "Trân trọng./."]
    raw = build_mail((name, address), subject, "\n".join(lines), cte=rng.choice(["base64", "8bit"]))
    if index % 2:  # internal mail too
        raw = build_mail(("Văn thư", COLLEAGUE), subject, "\n".join(lines), to=OFFICIAL)
        return raw, Envelope(COLLEAGUE, (OFFICIAL,), authenticated_user=COLLEAGUE), f"internal: {subject}"
    return raw, Envelope(address, (OFFICIAL,)), f"{address}: {subject}"


def _newsletter(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    source, address, subject = [
        ("VnExpress", "newsletter@vnexpress.net", "Bản tin sáng: 10 tin nổi bật hôm nay"),
        ("Shopee Việt Nam", "news@shopee.vn", "12.12 Siêu Sale - Voucher đến 50% đang chờ bạn"),
        ("Tuổi Trẻ", "bantin@tuoitre.vn", "Điểm tin cuối tuần"),
        ("Medium Daily Digest", "noreply@medium.com", "Stories for you: The state of e-government"),
        ("Tiki", "marketing@tiki.vn", "Ưu đãi cuối năm cho khách hàng thân thiết"),
    ][index % 5]
    lines = [f"{source} xin gửi tới bạn những nội dung nổi bật.", "Đăng nhập ngay để nhận ưu đãi dành riêng cho bạn.",
             "Bạn nhận được thư này vì đã đăng ký nhận bản tin. Hủy đăng ký | Quản lý tài khoản"]
    raw = build_mail((source, address), subject, "\n".join(lines), html=_html(lines, "Xem ngay", footer="Hủy đăng ký"),
                     headers=_bulk(rng, address.partition("@")[2]), dkim_domain=address.partition("@")[2])
    return raw, Envelope(f"bounce@{address.partition('@')[2]}", (OFFICIAL,)), f"{address}: {subject}"


def _citizen(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    address = ["nguyenvanb1990@gmail.com", "tranthic@yahoo.com.vn", "le.d@outlook.com"][index % 3]
    subject = rng.choice(["Hỏi về việc không nhận được mã OTP khi đăng ký tài khoản dịch vụ công",
                          "Xin xác nhận tài khoản nộp hồ sơ trực tuyến", "Confirm your email - bị lỗi, nhờ hỗ trợ"])
    lines = ["Kính gửi Sở,", "Tôi đã đăng ký tài khoản trên cổng dịch vụ công nhưng không nhận được mã xác thực.",
             "Mong Sở hỗ trợ. Xin cảm ơn."]
    raw = build_mail(("", address), subject, "\n".join(lines))
    return raw, Envelope(address, (OFFICIAL,)), f"{address}: {subject}"


def _meeting(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    """A ministry's online meeting hosted on a commercial platform: attendance, not an account."""
    subject, text = [("Meeting Registration Approved", "Thank you for registering for the meeting: Giao ban chuyen "
                      "doi so. Join from a PC, Mac, iPad or Android."),
                     ("Xác nhận đăng ký tham dự cuộc họp trực tuyến", "Cảm ơn bạn đã đăng ký. Đường dẫn tham gia "
                      "cuộc họp: https://zoom.us/j/812"),
                     ("Registration confirmed: Digital government webinar", "Thank you for registering for the "
                      "webinar.")][index % 3]
    raw = build_mail(("Zoom", "no-reply@zoom.us"), subject, text + "\n", headers={"Auto-Submitted": "auto-generated"})
    return raw, Envelope("bounce@zoom.us", (OFFICIAL,)), f"zoom.us: {subject}"


def _gov_password_reset(rng: random.Random, index: int) -> tuple[bytes, Envelope, str]:
    """A government system's password reset or OTP, sometimes relayed through a contractor's host."""
    code = _code(rng)
    sender, envelope = [(("Hệ thống QLVB", "qlvb@quangninh.gov.vn"), "qlvb@quangninh.gov.vn"),
                        (("VNeID", "no-reply@vneid.gov.vn"), "bounce@vneid.gov.vn"),
                        (("Một cửa điện tử", "no-reply@motcua.quangninh.gov.vn"),
                         "bounce@vnpt-relay.example")][index % 3]
    subject = rng.choice([f"Mã xác thực đặt lại mật khẩu: {code}", "Dat lai mat khau tai khoan", "Mã OTP đăng nhập"])
    raw = build_mail(sender, subject, f"Mã OTP của bạn là {code}. Vui lòng xác nhận trong 5 phút.\n",
                     headers={"Auto-Submitted": "auto-generated"})
    return raw, Envelope(envelope, (OFFICIAL,)), f"{sender[1]}: {subject}"


NEGATIVE_BUILDERS = {"meeting-registration": _meeting, "gov-password-reset": _gov_password_reset,
                     "gov-portal": _gov_portal, "gov-event": _gov_event, "press-release": _press_release,
                     "official-mail": _official, "newsletter": _newsletter, "citizen": _citizen}


# -- 1.3(1): markings ----------------------------------------------------------------------

_SPACES = ["\u0020", "\u00a0", "\u2002", "\u2009", "\u202f", "\u3000"]
LEVELS = [("TUYỆT MẬT", "Tuyệt mật"), ("TỐI MẬT", "Tối mật"), ("MẬT", "Mật")]


def letter_spaced(stamp: str, rng: random.Random) -> str:
    """A stamp set letter by letter: one space kind between letters, a wider gap between words."""
    space = rng.choice(_SPACES)
    word_gap = space * rng.choice([2, 3, 4])
    return word_gap.join(space.join(word) for word in stamp.split(" "))


def _cong_van(top: str, body: str = "Báo cáo tình hình thực hiện nhiệm vụ quý IV.") -> list[str]:
    return ["ỦY BAN NHÂN DÂN TỈNH QUẢNG NINH", "Số: 273/BC-UBND", top, "BÁO CÁO", body, "Nơi nhận: như trên./."]


def pdf_char_spaced(stamp: str, char_space: float, word_space: float = 0.0) -> bytes:
    """A PDF whose stamp is set with character spacing (the PDF Tc/Tw operators), as word
    processors write "expanded" text, built with reportlab; PyMuPDF extracts it in fragments
    ("T ỐI M ẬT") or over lines ("T ỐI " / "M ẬT")."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    if "DejaVu" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("DejaVu", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer)
    page.setFont("DejaVu", 12)
    page.drawString(72, 780, "ỦY BAN NHÂN DÂN TỈNH QUẢNG NINH")
    page.drawString(72, 762, "Số: 273/BC-UBND")
    text = page.beginText(72, 735)
    text.setFont("DejaVu", 13)
    text.setCharSpace(char_space)
    text.setWordSpace(word_space)
    text.textLine(stamp)
    page.drawText(text)
    page.setStrokeColorRGB(1, 0, 0)
    page.rect(66, 728, 160, 22)
    page.drawString(72, 700, "BÁO CÁO tình hình thực hiện nhiệm vụ quý IV")
    page.showPage()
    page.save()
    return buffer.getvalue()


def metadata_document(index: int, stamp: str, field: str) -> tuple[str, bytes, str]:
    """A document whose only marking is in its metadata: an xlsx sheet name or core property
    (openpyxl), a docx core property (python-docx), an ODF meta.xml keyword."""
    import docx as python_docx
    import openpyxl

    buffer = io.BytesIO()
    kind = index % 4
    if kind < 2:
        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        sheet.append(["Đơn vị", "Số văn bản"])
        sheet.append(["Sở Nội vụ", 12])
        if kind == 0:
            sheet.title = stamp
        else:
            book.properties.creator, book.properties.keywords, book.properties.category = "Văn thư", stamp, field
        book.save(buffer)
        return "bang-tong-hop.xlsx", buffer.getvalue(), ["sheet name", "xlsx keywords/category"][kind] + f" {stamp!r}"
    if kind == 2:
        document = python_docx.Document()
        document.add_paragraph("Kính gửi các phòng ban.")
        document.core_properties.subject, document.core_properties.category = stamp, field
        document.save(buffer)
        return "cong-van.docx", buffer.getvalue(), f"docx subject/category {stamp!r}"
    meta = ('<?xml version="1.0" encoding="UTF-8"?><office:document-meta '
            'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
            'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0"><office:meta>'
            "<meta:generator>LibreOffice/7.4.7.2$Linux_X86_64</meta:generator>"
            f"<meta:keyword>báo cáo</meta:keyword><meta:keyword>{stamp}</meta:keyword></office:meta>"
            "</office:document-meta>")
    buffer.write(odt(["Kính gửi các phòng ban."]))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("meta.xml", meta)
    return "cong-van.odt", buffer.getvalue(), f"odt meta.xml keyword {stamp!r}"


def _named_attachment(filename: str, ctype: str, data: bytes, *, subject: str = "Gửi tài liệu") -> bytes:
    """A message whose attachment name is written as RFC 2231 (what EmailMessage does for non-ASCII)."""
    message = EmailMessage()
    message["From"] = OFFICIAL
    message["To"] = COLLEAGUE
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(ICT))
    message.set_content("Gửi kèm tài liệu.\n")
    maintype, _, subtype = ctype.partition("/")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=SMTP)


_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2212bc40000000049454e44ae426082")


def marking_corpus(seed: int = 13, per_class: int = 8) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []

    def add(cls: str, raw: bytes, expect: str, note: str) -> None:
        samples.append(Sample("1.3(1)", cls, raw, Envelope(OFFICIAL, (COLLEAGUE,), authenticated_user=OFFICIAL),
                              expect, note))

    for index in range(per_class):
        stamp, level = LEVELS[index % 3]
        spaced = letter_spaced(stamp, rng)
        if index % 2:
            spaced = spaced.lower() if index % 4 == 1 else spaced
        form = "NFD" if index % 3 == 0 else "NFC"
        text = unicodedata.normalize(form, "\n".join(_cong_van(spaced)))
        cte = ["base64", "quoted-printable", "8bit"][index % 3]
        html = _html(_cong_van(f"<b style=\"color:red;border:double\">{spaced}</b>")) if index % 2 else None
        add("spaced-stamp", build_mail(("Chuyên viên", OFFICIAL), "V/v báo cáo quý IV", text, to=COLLEAGUE, cte=cte,
                                       html=html), level, f"{spaced!r} {form} {cte}")

        stamp, level = LEVELS[(index + 1) % 3]
        spaced_pdf = " ".join(stamp.replace(" ", "  "))  # how character spacing comes out of a PDF
        attached = [("bao-cao.pdf", "application/pdf", pdf(_cong_van(spaced_pdf)))]
        add("spaced-stamp-pdf", build_mail(("Chuyên viên", OFFICIAL), "Gửi báo cáo", "Gửi kèm báo cáo.\n", to=COLLEAGUE,
                                           attachments=attached),
              level, f"PDF {spaced_pdf!r}")

        first, second = rng.sample(LEVELS, 2)
        highest = min(first, second, key=LEVELS.index)[1]
        separator = rng.choice([" | ", " / ", ", ", "  ", " - "])
        line = f"{first[0]}{separator}{second[0]}"
        if index % 2:
            attachment = docx(body="Báo cáo tình hình an ninh.", textbox=line)
            raw = build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", "Gửi kèm.\n", to=COLLEAGUE,
                             attachments=[("bc.docx", "application/vnd.openxmlformats-officedocument."
                                           "wordprocessingml.document", attachment)])
        else:
            raw = build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", "\n".join(_cong_van(line)), to=COLLEAGUE)
        add("multi-level-stamp", raw, highest, line)

        first, second = rng.sample(LEVELS, 2)
        highest = min(first, second, key=LEVELS.index)[1]
        joiner = rng.choice([", ", "; ", " / ", " và ", " | "])
        field = f"Độ mật: {first[1]}{joiner}{second[1].lower() if index % 2 else second[1]}"
        if index % 2:
            table = [["Số ký hiệu", "15/TB-UBND"], ["Độ mật", f"{first[1]}{joiner}{second[1]}"]]
            attachment = docx(body="Thông tin văn bản", table=table)
            raw = build_mail(("Chuyên viên", OFFICIAL), "Văn bản đến", "Gửi kèm.\n", to=COLLEAGUE,
                             attachments=[("vb.docx", "application/octet-stream", attachment)])
        else:
            raw = build_mail(("Hệ thống QLVB", OFFICIAL), "Văn bản đến: 15/TB-UBND",
                             f"Số ký hiệu: 15/TB-UBND\n{field}\nĐộ khẩn: Thường\n", to=COLLEAGUE)
        add("multi-level-metadata", raw, highest, field)

        stamp, level = LEVELS[index % 3]
        attachment = docx(body="Báo cáo", header=stamp) if index % 2 else docx(body="Báo cáo", textbox=stamp)
        add("plain-stamp", build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", "Gửi kèm.\n", to=COLLEAGUE,
                                      attachments=[("bc.docx", "application/octet-stream", attachment)]), level, stamp)

        # 1.3(1) held-out style classes: character spacing, names, title case, encodings.
        stamp, level = LEVELS[index % 3]
        char_space, word_space = [(3, 0), (5, 0), (8, 0), (4, 10), (6, 10), (12, 0), (15, 8)][index % 7]
        add("char-spaced-pdf", build_mail(("Chuyên viên", OFFICIAL), "Gửi báo cáo", "Gửi kèm.\n", to=COLLEAGUE,
                                          attachments=[("bc.pdf", "application/pdf",
                                                        pdf_char_spaced(stamp, char_space, word_space))]),
            level, f"PDF {stamp!r} Tc={char_space} Tw={word_space}")

        stamp, level = LEVELS[(index + 2) % 3]
        filename, ctype, data = [(f"{stamp} - Kế hoạch bảo vệ.png", "image/png", _PNG),
                                 (f"[{level}] Báo cáo.pdf", "application/pdf", pdf(["Báo cáo quý IV"])),
                                 (f"{stamp}_QD_15.docx", "application/octet-stream", docx(body="Quyết định")),
                                 (unicodedata.normalize("NFD", f"{stamp}.txt"), "text/plain", b"noi dung\n")][index % 4]
        add("stamp-in-filename", _named_attachment(filename, ctype, data), level, f"file name {filename!r}")

        stamp, level = LEVELS[index % 2]  # two-word levels: "Tối Mật" in title case is no prose
        title = stamp.title()
        attachment = docx(body="Báo cáo", header=title) if index % 2 else docx(body="Báo cáo", textbox=title)
        add("title-case-stamp", build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", "Gửi kèm.\n", to=COLLEAGUE,
                                           attachments=[("bc.docx", "application/octet-stream", attachment)]),
            level, title)

        stamp, level = LEVELS[index % 3]
        variant = index % 4
        if variant == 0:  # an HTML stamp written as character references
            refs = "".join(f"&#{ord(ch)};" if not ch.isascii() else ch for ch in stamp)
            raw = build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", "Xem bản HTML.\n", to=COLLEAGUE,
                             html=_html(["Số: 273/BC-UBND", f"<b style=\"border:double red\">{refs}</b>"]))
        elif variant == 1:  # an RFC 2047 Q subject split between encoded words
            quoted = "".join(f"={byte:02X}" for byte in f"[{stamp}]".encode())
            raw = build_mail(("Chuyên viên", OFFICIAL), "PLACEHOLDER", "Gửi kèm.\n", to=COLLEAGUE)
            raw = raw.replace(b"Subject: PLACEHOLDER",
                              b"Subject: =?utf-8?q?" + quoted[:len(quoted) // 3 * 3 // 2 // 3 * 3].encode()
                              + b"?=\r\n =?utf-8?q?" + quoted[len(quoted) // 3 * 3 // 2 // 3 * 3:].encode()
                              + b"_K=E1=BA=BF_ho=E1=BA=A1ch?=")
        elif variant == 2:  # inside a forwarded message (message/rfc822)
            inner = build_mail(("Văn thư", COLLEAGUE), "Văn bản đến", "\n".join(_cong_van(stamp)), to=OFFICIAL)
            outer = EmailMessage()
            outer["From"], outer["To"], outer["Subject"] = OFFICIAL, COLLEAGUE, "Fwd: Văn bản đến"
            outer.set_content("Chuyển tiếp.\n")
            outer.add_attachment(inner, maintype="message", subtype="rfc822")
            raw = outer.as_bytes(policy=SMTP)
        else:  # each letter its own run in a docx table cell ("M", "Ậ", "T")
            raw = build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", "Gửi kèm.\n", to=COLLEAGUE,
                             attachments=[("bc.docx", "application/octet-stream",
                                           docx_runs([(ch, False) for ch in unicodedata.normalize("NFD", stamp)]))])
        add("encoded-stamp", raw, level, f"{stamp} variant {variant}")

        specimen = [
            ("Mẫu con dấu các độ mật như sau:", [["TUYỆT MẬT", "TỐI MẬT", "MẬT"]]),
            ("Dấu chỉ độ mật gồm ba mức, theo thứ tự:", [["TỐI MẬT", "TUYỆT MẬT", "MẬT"], ["B", "A", "C"]]),
        ][index % 2]
        text = ("Mức độ mật: Tuyệt mật, Tối mật, Mật là ba mức phân loại theo Luật số 117/2025/QH15."
                if index % 3 == 2 else None)
        attachment = docx(body=specimen[0], table=specimen[1]) if text is None else docx(body=text)
        add("specimen-stamps", build_mail(("Phòng ATTT", OFFICIAL), "Tài liệu tập huấn", "Gửi kèm.\n", to=COLLEAGUE,
                                          attachments=[("tap-huan.docx", "application/octet-stream", attachment)]),
            "", text or specimen[0])

        words = ["BẢO MẬT", "MẬT KHẨU", "MẬT ĐỘ", "THÂN MẬT", "BÍ MẬT", "TÀI LIỆU MẬT"][index % 6]
        char_space = [3, 5, 8, 12][index % 4]
        add("char-spaced-words", build_mail(("Chuyên viên", OFFICIAL), "Gửi tài liệu", "Gửi kèm.\n", to=COLLEAGUE,
                                            attachments=[("hd.pdf", "application/pdf",
                                                          pdf_char_spaced(words, char_space, [0, 10][index % 2]))]),
            "", f"PDF {words!r} Tc={char_space}, word spacing {[0, 10][index % 2]}")

        stamp, level = LEVELS[(index + 1) % 3]
        name, data, note = metadata_document(index, stamp, f"Độ mật: {level}")
        add("metadata-stamp", _named_attachment(name, "application/octet-stream", data, subject="Gửi báo cáo"),
            level, note)
        words = ["Bảo mật", "Mật khẩu wifi", "Mật độ dân số", "bảo mật thông tin"][index % 4]
        name, data, note = metadata_document(index, words, "Độ mật: Thường")
        add("metadata-words", _named_attachment(name, "application/octet-stream", data, subject="Gửi báo cáo"),
            "", note)

    training = [
        "Theo Luật Bảo vệ bí mật nhà nước, bí mật nhà nước được phân loại theo ba độ mật: Tuyệt mật, Tối mật và Mật.",
        "Các mức độ mật gồm: TUYỆT MẬT, TỐI MẬT và MẬT; con dấu được đóng ở góc trên bên trái trang đầu.",
        "Ba mức: TUYỆT MẬT / TỐI MẬT / MẬT",
        "Các độ mật: Tuyệt mật, Tối mật và Mật.",
        "Under the law, the levels are TUYỆT MẬT, TỐI MẬT and MẬT.",
        "Dấu chỉ độ mật bao gồm các mức TUYỆT MẬT, TỐI MẬT, MẬT, lần lượt in ký hiệu A, B, C trên phong bì.",
        "Bí mật nhà nước được phân loại theo ba độ mật:\n- TUYỆT MẬT\n- TỐI MẬT\n- MẬT\nCon dấu màu đỏ, viền kép.",
        "Các mức độ mật gồm:\n1. Tuyệt mật (ký hiệu A)\n2. Tối mật (ký hiệu B)\n3. Mật (ký hiệu C)",
    ]
    lookalike = [
        "HƯỚNG DẪN ĐỔI MẬT KHẨU\nĐề nghị đổi mật khẩu hộp thư trước ngày 30/11.",
        "Luật Bảo vệ bí mật nhà nước số 117/2025/QH15\nBÍ MẬT NHÀ NƯỚC",
        "B Ả O   M Ậ T   T H Ô N G   T I N\nTăng cường bảo mật.",
        "Q U Y Ế T   Đ Ị N H\nVề mật độ dân số và sản phẩm mật ong Ba Chẽ.",
        "Ông NGUYỄN VĂN MẬT, chuyên viên\nN G U Y Ễ N   V Ă N   M Ậ T",
        "Quan hệ thân mật, mật thiết; ứng dụng mật mã dân sự; tiền mặt.",
        "KHẨN\nLƯU HÀNH NỘI BỘ\nĐộ mật: Thường",
        "m ậ t   k h ẩ u   m ớ i",
    ]
    for index in range(per_class):
        text = training[index % len(training)]
        raw = (build_mail(("Phòng ATTT", OFFICIAL), "Tài liệu tập huấn bảo vệ bí mật nhà nước", text + "\n",
                          to=COLLEAGUE)
               if index % 2 == 0 else
               build_mail(("Phòng ATTT", OFFICIAL), "Tài liệu tập huấn", "Gửi kèm tài liệu.\n", to=COLLEAGUE,
                          attachments=[("tap-huan.docx", "application/octet-stream", docx(body=text))]))
        add("training-text", raw, "", text[:60])
        text = lookalike[index % len(lookalike)]
        add("lookalike-words", build_mail(("Chuyên viên", OFFICIAL), "Thông báo", text + "\n", to=COLLEAGUE,
                                          cte=["base64", "quoted-printable"][index % 2]), "", text[:60])
        subject, lines = "V/v báo cáo tháng", _cong_van("", "Kính gửi các đơn vị, đề nghị báo cáo đúng hạn.")
        add("official-mail", build_mail(("Chuyên viên", OFFICIAL), subject, "\n".join(lines), to=COLLEAGUE), "",
            subject)
    return samples
