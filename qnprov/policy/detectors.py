"""Detectors: pure functions from an inspected message to raw findings.

Each detector knows nothing about actions; the engine attaches the rule's (possibly
overridden) action. A detector returns ``(location, evidence)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parseaddr

from qnprov.policy.bundle import PolicyData
from qnprov.policy.domains import domain_of, match_domain
from qnprov.policy.extract_types import Extraction
from qnprov.policy.markings import MarkingMatcher, normalise_text
from qnprov.policy.mime import Entity, decode_body, decode_header_value, split_entity, split_multipart
from qnprov.policy.models import (
    ClassifiedMarkingParams,
    Direction,
    FreemailAutoforwardParams,
    OffSystemParams,
    Rule,
    ServiceRegistrationParams,
)
from qnprov.policy.registration import find_registration
from qnprov.policy.signatures import SignatureResult

RawFinding = tuple[str, str]


@dataclass
class Context:
    """Everything the detectors may read about one message."""

    policy: PolicyData
    message: Message
    mail_from: str
    rcpts: tuple[str, ...]
    direction: Direction
    authenticated_user: str | None
    extraction: Extraction
    signatures: list[SignatureResult] = field(default_factory=list)
    matchers: dict[bool, MarkingMatcher] = field(default_factory=dict)
    #: The whole message (headers and raw body), for detectors that read bodies themselves.
    entity: Entity | None = None


Detector = Callable[[Context, Rule], list[RawFinding]]


def _short(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- 1.1 -------------------------------------------------------------------------------


def sender_authentication(ctx: Context, rule: Rule) -> list[RawFinding]:
    sender_domain = domain_of(ctx.mail_from)
    if not sender_domain or sender_domain not in ctx.policy.local_domains:
        return []
    if ctx.authenticated_user:
        return []
    return [("envelope:mail-from", f"official sender {ctx.mail_from} was not authenticated")]


def sender_login_match(ctx: Context, rule: Rule) -> list[RawFinding]:
    login = (ctx.authenticated_user or "").strip().lower()
    sender = ctx.mail_from.strip().strip("<>").lower()
    if not login or not sender:
        return []
    if "@" not in login:
        # A bare login names a mailbox in one of the local domains.
        if sender.partition("@")[0] == login and domain_of(sender) in ctx.policy.local_domains:
            return []
    elif login == sender:
        return []
    return [("envelope:mail-from", f"sender {ctx.mail_from} does not match login {ctx.authenticated_user}")]


def official_identity_off_system(ctx: Context, rule: Rule) -> list[RawFinding]:
    params = rule.typed_params()
    assert isinstance(params, OffSystemParams)
    _, from_address = parseaddr(decode_header_value(ctx.message.get("From")))
    from_domain = domain_of(from_address)
    province = ctx.policy.province_domains
    if not from_domain or match_domain(from_domain, province) is None:
        return []
    envelope_domain = domain_of(ctx.mail_from)
    if envelope_domain and match_domain(envelope_domain, province) is not None:
        return []
    if envelope_domain and match_domain(envelope_domain, frozenset(params.exempt_envelope_domains)):
        return []
    return [("header:from", f"From {from_address} sent via {ctx.mail_from or '<>'}, outside the official system")]


def province_route_unenforced(ctx: Context, rule: Rule) -> list[RawFinding]:
    """Official mail to another province domain that has no TLS policy entry could leave the
    official system in plaintext or reach a look-alike server: record it so the map gets fixed."""
    covered = {host.domain for host in ctx.policy.province_hosts}
    findings: list[RawFinding] = []
    for rcpt in ctx.rcpts:
        domain = domain_of(rcpt)
        if not domain or domain in ctx.policy.local_domains:
            continue
        if match_domain(domain, ctx.policy.province_domains) and not match_domain(domain, frozenset(covered)):
            findings.append(("envelope:rcpt", f"{rcpt}: province domain {domain} has no TLS policy entry"))
    return findings


# -- 1.2 -------------------------------------------------------------------------------


def signed_document(ctx: Context, rule: Rule) -> list[RawFinding]:
    return [(result.location, result.describe()) for result in ctx.signatures]


#: Headers only this system may write; arriving from outside they are forgeries.
POLICY_HEADERS = ("X-QN-Policy", "X-QN-Signature")


def policy_header_present(ctx: Context, rule: Rule) -> list[RawFinding]:
    """A sender cannot be allowed to pre-fill "X-QN-Signature: valid" for a reader to trust."""
    present = [name for name in POLICY_HEADERS if ctx.message.get(name) is not None]
    if not present:
        return []
    return [("header:" + name.lower(), f"{name} already present on arrival: "
             f"{_short(decode_header_value(ctx.message.get(name)), 80)}") for name in present]


def signed_document_invalid(ctx: Context, rule: Rule) -> list[RawFinding]:
    return [
        (result.location, result.describe())
        for result in ctx.signatures
        if result.status != "valid"
    ]


# -- 1.3(1) ----------------------------------------------------------------------------


def classified_marking(ctx: Context, rule: Rule) -> list[RawFinding]:
    params = rule.typed_params()
    assert isinstance(params, ClassifiedMarkingParams)
    matcher = ctx.matchers.get(params.declassified_is_marking)
    if matcher is None:
        matcher = MarkingMatcher(ctx.policy.markings, declassified_is_marking=params.declassified_is_marking)
        ctx.matchers[params.declassified_is_marking] = matcher
    findings: list[RawFinding] = []
    for segment in ctx.extraction.segments:
        # A few hits, so a higher level on a later line (MẬT, then TỐI MẬT) is the one reported.
        for hit in matcher.find(segment.text, limit=3):
            findings.append((segment.location, f"{hit.level} ({hit.form}): {_short(hit.evidence)}"))
            break
    flagged = {location for location, _ in findings}
    named = [(location, evidence) for location, _, evidence in classified_marking_filename(ctx, rule)
             if location not in flagged]
    return findings + named


_MAX_NAME_PARTS = 64
_MAX_NAME_DEPTH = 8


def attachment_names(entity: Entity | None) -> list[str]:
    """File names of the message's parts (RFC 2231 and RFC 2047 decoded), attached messages included.

    A name such as "TỐI MẬT - Kế hoạch.docx" marks the file whatever its content, and a part
    whose content yields no text (an image, an unknown type) still has its name."""
    names: list[str] = []
    budget = [_MAX_NAME_PARTS]

    def walk(part: Entity, depth: int) -> None:
        if budget[0] <= 0 or depth > _MAX_NAME_DEPTH:
            return
        budget[0] -= 1
        headers = part.headers
        filename = headers.get_filename()
        if filename:
            names.append(decode_header_value(filename))
        ctype = headers.get_content_type()
        if ctype.startswith("multipart/"):
            boundary = headers.get_boundary()
            for child in (split_multipart(part.body, boundary) if boundary else None) or []:
                walk(split_entity(child), depth + 1)
        elif ctype == "message/rfc822":
            walk(split_entity(decode_body(headers, part.body)), depth + 1)

    if entity is not None:
        walk(entity, 0)
    return names


def _name_text(name: str) -> tuple[str, str]:
    """A file name as text, without its extension: (words, segments). In the words "_" and
    "." read as spaces; in the segments "_" separates like a column gap ("TỐI MẬT_QD_15")."""
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    words = normalise_text(stem.replace("_", " ").replace(".", " "))
    return " ".join(words.split()), normalise_text(stem.replace("_", " | ").replace(".", " "))


def classified_marking_filename(ctx: Context, rule: Rule) -> list[tuple[str, str, str]]:
    """Markings in attachment and archive-member names: (location, level, evidence)."""
    params = rule.typed_params()
    assert isinstance(params, ClassifiedMarkingParams)
    matcher = ctx.matchers[params.declassified_is_marking]
    located = {name: f"attachment:{name}" for name in attachment_names(ctx.entity)}
    locations = [segment.location for segment in ctx.extraction.segments]
    locations += [problem.location for problem in ctx.extraction.problems]
    for location in locations:
        for component in location.split("/")[1:]:  # archive members and nested parts
            located.setdefault(component.removeprefix("attachment:"), location)
    ordinary = [word.casefold() for word in ctx.policy.markings.ordinary_words]
    found = []
    for name, location in located.items():
        words, segments = _name_text(name)
        if any(word in words.casefold() for word in ordinary):
            continue
        for hit in matcher.find(segments, limit=1):
            found.append((location, hit.level, f"{hit.level} ({hit.form} in file name): {_short(name)}"))
            break
    return found


def classified_uninspectable(ctx: Context, rule: Rule) -> list[RawFinding]:
    return [(p.location, f"cannot be inspected: {p.reason}") for p in ctx.extraction.problems
            if p.kind == "uninspectable"]


def classified_no_text_layer(ctx: Context, rule: Rule) -> list[RawFinding]:
    return [(p.location, p.reason) for p in ctx.extraction.problems if p.kind == "no-text-layer"]


# -- 1.3(2) ----------------------------------------------------------------------------


def _freemail_rcpts(ctx: Context) -> list[str]:
    return [rcpt for rcpt in ctx.rcpts if match_domain(domain_of(rcpt), ctx.policy.freemail_domains)]


def freemail_recipient(ctx: Context, rule: Rule) -> list[RawFinding]:
    if domain_of(ctx.mail_from) not in ctx.policy.local_domains:
        return []
    return [("envelope:rcpt", f"official sender {ctx.mail_from} to free mailbox {rcpt}")
            for rcpt in _freemail_rcpts(ctx)]


def freemail_autoforward(ctx: Context, rule: Rule) -> list[RawFinding]:
    params = rule.typed_params()
    assert isinstance(params, FreemailAutoforwardParams)
    targets = _freemail_rcpts(ctx)
    if not targets:
        return []
    markers = [name for name in params.forward_marker_headers if ctx.message.get(name) is not None]
    auto = str(ctx.message.get("Auto-Submitted", "")).strip().lower().startswith("auto-forwarded")
    if not markers and not auto:
        return []
    reason = ", ".join(markers) if markers else "Auto-Submitted: auto-forwarded"
    return [("envelope:rcpt", f"automatic forward ({reason}) to free mailbox {rcpt}") for rcpt in targets]


# -- 1.3(3) ----------------------------------------------------------------------------

def service_registration(ctx: Context, rule: Rule) -> list[RawFinding]:
    """A sign-up, verification, OTP or welcome from an online service (qnprov/policy/registration.py).

    The evidence names the account and classifies the service: "social network Facebook",
    "e-commerce Tiki", ..., or "unknown service example.net (unknown, for review)"."""
    params = rule.typed_params()
    assert isinstance(params, ServiceRegistrationParams)
    found = find_registration(ctx.policy, ctx.message, ctx.mail_from, ctx.entity,
                              match_subject_without_sender=params.match_subject_without_sender)
    if found is None:
        return []
    accounts = ", ".join(r for r in ctx.rcpts if domain_of(r) in ctx.policy.local_domains) or ", ".join(ctx.rcpts)
    what = "sign-up" if found.intent else "account notification"
    return [("envelope:rcpt", f"account {accounts}: {what} at {found.describe()}")]


DETECTORS: dict[str, Detector] = {
    "sender_authentication": sender_authentication,
    "sender_login_match": sender_login_match,
    "official_identity_off_system": official_identity_off_system,
    "province_route_unenforced": province_route_unenforced,
    "signed_document": signed_document,
    "signed_document_invalid": signed_document_invalid,
    "policy_header_present": policy_header_present,
    "classified_marking": classified_marking,
    "classified_uninspectable": classified_uninspectable,
    "classified_no_text_layer": classified_no_text_layer,
    "freemail_recipient": freemail_recipient,
    "freemail_autoforward": freemail_autoforward,
    "service_registration": service_registration,
}

