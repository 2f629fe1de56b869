"""Clause 1.3(3): was the official mailbox used to sign up at an online service?

The question is answered from the message's *intent*, not from a list of brands:

1. Who sent it. Government systems (``*.gov.vn``, the province's own domains) are never a
   violation: the national public-service portal, event registrations confirmed by other
   provinces and ministries. A personal free mailbox (gmail.com ...) is a person writing,
   not a service.
2. What it says. A sign-up, a verification, an OTP or a welcome to a new account, in
   Vietnamese or English, in the subject or (from automated senders) in the body. A
   press release, a newsletter issue or an invitation to attend an event is not a sign-up
   whatever words it contains.
3. Which service. The sender domains (envelope, From, DKIM d=) are looked up in
   ``registration-senders.txt``, which classifies the service (social network,
   e-commerce, forum, messaging). A domain marked ``/notify`` mails only account holders,
   so any mail from it shows an account. A sign-up at a service that is not listed is
   still reported, classified "unknown, for review", never dropped.

The patterns and lists are versioned data (``registration-subjects.yaml``,
``registration-senders.txt``); this module only applies them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parseaddr

from qnprov.policy.bundle import PolicyData
from qnprov.policy.domains import domain_of, match_domain
from qnprov.policy.html_text import html_to_text
from qnprov.policy.markings import normalise_text
from qnprov.policy.mime import Entity, decode_body, decode_header_value, split_entity, split_multipart
from qnprov.policy.models import SubjectPatterns

#: Human names of the categories in registration-senders.txt.
CATEGORIES = {
    "social": "social network",
    "ecommerce": "e-commerce",
    "forum": "forum",
    "messaging": "messaging",
    "account": "online account",
}
UNKNOWN = "unknown, for review"

# Body text read for intent: enough for any sign-up mail, bounded for huge newsletters.
_MAX_BODY_CHARS = 64 * 1024
_MAX_PARTS = 16
_MAX_DEPTH = 4

_DKIM_D = re.compile(r"(?:^|;)\s*d\s*=\s*([A-Za-z0-9.-]+)")
# Local parts that only automated systems use.
_AUTOMATED_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|noreply|notifications?|notify|mailer|bounces?|"
    r"verify|verification|security|accounts?|register|registration|welcome|info|support|hello|team|"
    r"community|forum|admin|system|auto|otp|"
    # Vietnamese role names: account, support, customer care, notice, verification, sign-up, no-reply.
    r"tai[-_.]?khoan|ho[-_.]?tro|cskh|thong[-_.]?bao|xac[-_.]?thuc|xac[-_.]?nhan|dang[-_.]?ky|khong[-_.]?tra[-_.]?loi)"
    r"(?:[-_.+].*)?$",
    re.IGNORECASE,
)
# Headers bulk and transactional senders add (RFC 2369, RFC 3834, RFC 2076, ESP markers).
_BULK_HEADERS = ("List-Unsubscribe", "List-Id", "Feedback-ID", "X-SES-Outgoing", "X-SG-EID", "X-Mailgun-Sid",
                 "X-MC-User", "X-Campaign", "X-Auto-Response-Suppress")


@dataclass(frozen=True)
class Service:
    domain: str
    category: str  # a key of CATEGORIES, or "" when the data file gives none
    name: str
    notify_only: bool

    def describe(self) -> str:
        kind = CATEGORIES.get(self.category, "online service")
        return f"{kind} {self.name}"


@dataclass(frozen=True)
class Registration:
    """A sign-up (or an account notification) found in one message."""

    service: Service | None  # None: unknown service
    sender_domain: str
    source: str  # which header named the service or the sender
    intent: str  # what showed the intent ("" for a /notify domain's notification)
    automated: tuple[str, ...] = ()

    @property
    def category(self) -> str:
        return self.service.category if self.service else "unknown"

    def describe(self) -> str:
        if self.service is not None:
            what = f"{self.service.describe()} ({self.source} {self.sender_domain})"
        else:
            what = f"unknown service {self.sender_domain} ({UNKNOWN}; {self.source})"
        parts = [what]
        if self.intent:
            parts.append(self.intent)
        else:
            parts.append("account notification")
        if self.automated:
            parts.append("automated: " + ", ".join(self.automated))
        return "; ".join(parts)


def parse_service(domain: str, label: str) -> Service:
    """``category[/notify] name`` from a registration-senders.txt label (old one-word labels too)."""
    first, _, rest = label.partition(" ")
    category, slash, flag = first.partition("/")
    if category in CATEGORIES:
        return Service(domain, category, rest.strip() or domain, slash == "/" and flag == "notify")
    return Service(domain, "", label, False)


@dataclass
class _Compiled:
    subject: tuple[re.Pattern[str], ...]
    body: tuple[re.Pattern[str], ...] = ()
    welcome: tuple[re.Pattern[str], ...] = ()
    account: tuple[re.Pattern[str], ...] = ()
    negative: tuple[re.Pattern[str], ...] = ()
    negative_senders: tuple[re.Pattern[str], ...] = ()
    government: frozenset[str] = field(default_factory=lambda: frozenset({"gov.vn"}))


_COMPILED: dict[int, tuple[PolicyData, _Compiled]] = {}


def _compile(policy: PolicyData) -> _Compiled:
    cached = _COMPILED.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    data: SubjectPatterns | None = policy.registration_intent

    def many(patterns: list[str]) -> tuple[re.Pattern[str], ...]:
        # Each pattern also without diacritics, for mail typed without them ("Xac nhan tai khoan").
        both = dict.fromkeys(p for pattern in patterns for p in (pattern, fold(pattern)))
        return tuple(re.compile(pattern, re.IGNORECASE) for pattern in both)

    subjects = many([pattern.pattern for pattern in policy.registration_subjects])
    if data is None:
        compiled = _Compiled(subjects)
    else:
        compiled = _Compiled(subjects, many(data.body_patterns), many(data.welcome_patterns),
                             many(data.account_words), many(data.not_signup_patterns),
                             many(data.not_signup_senders),
                             frozenset(d.lower().strip(".") for d in data.government_suffixes))
    if len(_COMPILED) >= 8:  # engines reloaded over a long run: keep only recent policies
        _COMPILED.clear()
    _COMPILED[id(policy)] = (policy, compiled)
    return compiled


def fold(text: str) -> str:
    """Vietnamese without diacritics, as many people type mail ("Xac nhan dang ky tai khoan").

    Only for intent: a folded phrase and its folded pattern are both matched, so the
    original spelling still wins whenever the text has its diacritics."""
    if text.isascii():
        return text
    text = text.replace("\u0111", "d").replace("\u0110", "D")
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))


def _with_folded(text: str) -> str:
    """The text, then (when it differs) its folded form on a line of its own."""
    folded = fold(text)
    return text if folded == text else f"{text}\n{folded}"


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> re.Match[str] | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return match
    return None


def dkim_domains(message: Message) -> list[str]:
    domains = []
    for value in message.get_all("DKIM-Signature") or []:
        match = _DKIM_D.search(" ".join(str(value).split()))
        if match:
            domains.append(match.group(1).lower())
    return domains


def automation_signals(message: Message, addresses: list[str]) -> tuple[str, ...]:
    """Signs that a system, not a person, sent the message."""
    signals = [name for name in _BULK_HEADERS if message.get(name) is not None]
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in {"bulk", "list", "junk"}:
        signals.append(f"Precedence: {precedence}")
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        signals.append(f"Auto-Submitted: {auto}")
    for address in addresses:
        local = address.strip().strip("<>").rpartition("@")[0]
        if local and _AUTOMATED_LOCAL.match(local):
            signals.append(f"sender {address}")
            break
    return tuple(signals)


def body_text(entity: Entity | None) -> str:
    """The readable text of the message's inline text parts, bounded in size and depth."""
    if entity is None:
        return ""
    chunks: list[str] = []
    budget = [_MAX_BODY_CHARS, _MAX_PARTS]

    def walk(part: Entity, depth: int) -> None:
        if budget[0] <= 0 or budget[1] <= 0 or depth > _MAX_DEPTH:
            return
        budget[1] -= 1
        headers = part.headers
        ctype = headers.get_content_type()
        if ctype.startswith("multipart/"):
            boundary = headers.get_boundary()
            children = split_multipart(part.body, boundary) if boundary else None
            for child in children or []:
                walk(split_entity(child), depth + 1)
            return
        if ctype not in {"text/plain", "text/html"} or headers.get_filename():
            return
        if str(headers.get("Content-Disposition", "")).strip().lower().startswith("attachment"):
            return
        data = decode_body(headers, part.body[: _MAX_BODY_CHARS * 4])
        charset = headers.get_content_charset() or "utf-8"
        try:
            text = data.decode(charset, errors="replace")
        except LookupError:
            text = data.decode("utf-8", errors="replace")
        if ctype == "text/html":
            text = html_to_text(text)
        text = " ".join(text.split())[: budget[0]]
        budget[0] -= len(text)
        chunks.append(text)

    walk(entity, 0)
    return normalise_text("\n".join(chunks))


def is_government(domain: str, policy: PolicyData, suffixes: frozenset[str]) -> bool:
    return bool(domain) and (match_domain(domain, suffixes) is not None
                             or match_domain(domain, policy.province_domains) is not None)


def find_registration(policy: PolicyData, message: Message, mail_from: str, entity: Entity | None, *,
                      match_subject_without_sender: bool = True) -> Registration | None:
    """The sign-up this (inbound) message shows, or None."""
    compiled = _compile(policy)
    _, from_address = parseaddr(decode_header_value(message.get("From")))
    envelope_domain, from_domain = domain_of(mail_from), domain_of(from_address)
    # Government systems and personal free mailboxes are never an online service's sign-up.
    for domain in (envelope_domain, from_domain):
        if is_government(domain, policy, compiled.government):
            return None
    if from_domain and match_domain(from_domain, policy.freemail_domains):
        return None
    candidates = [("envelope sender", envelope_domain), ("From", from_domain)]
    candidates += [("DKIM d=", domain) for domain in dkim_domains(message)]
    service: Service | None = None
    source, sender_domain = "From", from_domain or envelope_domain
    for where, domain in candidates:
        listed = match_domain(domain, policy.registration_senders) if domain else None
        if listed:
            found = parse_service(listed, policy.registration_senders[listed])
            if service is None or (found.notify_only and not service.notify_only):
                service, source, sender_domain = found, where, domain
    if not sender_domain:
        return None
    shown = normalise_text(decode_header_value(message.get("Subject")))
    subject = _with_folded(shown)
    automated = automation_signals(message, [mail_from, from_address])
    if _first(compiled.negative, subject) or _first(compiled.negative_senders, from_address.rpartition("@")[0]):
        # A press release, newsletter issue, event attendance, correspondence or a press
        # address is no sign-up; a /notify domain still shows an account.
        if service is not None and service.notify_only:
            return Registration(service, sender_domain, source, "", automated)
        return None
    intent = _intent(compiled, subject, entity, bool(automated), service is not None, shown)
    if intent:
        if service is None and not match_subject_without_sender:
            return None
        return Registration(service, sender_domain, source, intent, automated)
    if service is not None and service.notify_only:
        return Registration(service, sender_domain, source, "", automated)
    return None


def _intent(compiled: _Compiled, subject: str, entity: Entity | None, automated: bool, known: bool,
            shown: str = "") -> str:
    """What shows a sign-up: a subject pattern, or body phrases from an automated sender.

    A welcome ("Welcome to X", "Chào mừng bạn đến với X") is weaker than a verification: it
    counts from an automated sender, or when the subject or body ties it to an account; a
    bare "welcome" in a promotion ("Chào mừng Black Friday") always needs that tie.
    From a sender that looks like a person at an unlisted domain (a contractor writing
    "Xác nhận tài khoản phần mềm"), a sign-up subject needs the body to agree."""
    shown = shown or subject
    matches = [m for m in (p.search(subject) for p in compiled.subject) if m]
    strong = next((m for m in matches if not _first(compiled.welcome, m.group(0))), None)
    if strong is not None:
        if automated or known:
            return f"subject {_short(shown)!r}"
        found = _first(compiled.body, _with_folded(body_text(entity)))
        return f"subject {_short(shown)!r} and body {_short(found.group(0))!r}" if found else ""
    welcome = matches[0] if matches else _first(compiled.welcome, subject)
    # A welcome *to* the service ("Welcome to X", "Chào mừng bạn đến với X") from a system
    # is enough; a bare "welcome" ("Chào mừng Black Friday") also needs an account word.
    if matches and automated:
        return f"welcome subject {_short(shown)!r} from an automated sender"
    if not (automated or known) and welcome is None:
        return ""
    body = _with_folded(body_text(entity))
    if automated or known:
        found = _first(compiled.body, body)
        if found:
            return f"body {_short(found.group(0))!r}"
    if welcome is not None:
        account = _first(compiled.account, subject) or _first(compiled.account, body)
        if account:
            return f"welcome subject {_short(shown)!r} with {account.group(0)!r}"
    return ""


def _short(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
