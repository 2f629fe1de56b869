"""The policy engine: one message and its envelope in, one decision out.

Pure with respect to the message: the engine never changes content (signed mail must
pass byte-identical); it returns a verdict and headers to add. The milter and the
offline ``qnprov policy check`` both call :meth:`PolicyEngine.evaluate`, so they give
the same answer for the same input.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import dataclass
from email.header import Header
from pathlib import Path
from typing import Any, Literal

from qnprov.policy.bundle import PolicyData, enabled_rules, load_policy
from qnprov.policy.detectors import DETECTORS, Context
from qnprov.policy.domains import domain_of
from qnprov.policy.extract import extract
from qnprov.policy.extract_types import Extraction, Problem
from qnprov.policy.markings import MarkingMatcher
from qnprov.policy.mime import split_entity
from qnprov.policy.models import ACTION_STRENGTH, Rule
from qnprov.policy.signatures import SignatureResult, SignatureVerifier, load_anchors

Direction = Literal["inbound", "outbound", "internal"]
Verdict = Literal["accept", "tag", "quarantine", "reject", "tempfail"]

log = logging.getLogger(__name__)

_VERDICT_OF_ACTION: dict[str, Verdict] = {"reject": "reject", "quarantine": "quarantine", "tag": "tag",
                                          "log": "accept"}
_ENGINE_RULE = "engine-failure"


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpts: tuple[str, ...]
    direction: Direction | None = None  # None: derived from local domains
    authenticated_user: str | None = None
    queue_id: str | None = None


@dataclass(frozen=True)
class Finding:
    rule: str
    clause: str
    action: str
    location: str
    evidence: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "clause": self.clause, "action": self.action, "location": self.location,
                "evidence": self.evidence}


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    findings: tuple[Finding, ...]
    policy_version: str
    direction: Direction
    add_headers: tuple[tuple[str, str], ...]
    reply: tuple[str, str, str] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "findings": [finding.to_json() for finding in self.findings],
            "policy_version": self.policy_version,
        }


def derive_direction(envelope: Envelope, local_domains: frozenset[str]) -> Direction:
    """Outbound/internal when the sender is local (or logged in), else inbound."""
    if envelope.direction is not None:
        return envelope.direction
    sender_local = domain_of(envelope.mail_from) in local_domains
    if not sender_local and not envelope.authenticated_user:
        return "inbound"
    if envelope.rcpts and all(domain_of(rcpt) in local_domains for rcpt in envelope.rcpts):
        return "internal"
    return "outbound"


def ascii_fold(text: str) -> str:
    """Vietnamese without diacritics, for SMTP reply text only.

    SMTP replies are 7-bit ASCII (RFC 5321 §4.2), so the bilingual reply loses its tone
    marks there; the audit log and headers keep the exact text.
    """
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return folded.encode("ascii", errors="replace").decode("ascii")


#: RFC 5321 §4.5.3.1.5 caps a reply line at 512 octets including "550 5.7.1 ".
MAX_REPLY_TEXT = 490


def smtp_safe(text: str) -> str:
    """One printable ASCII line for an SMTP reply.

    libmilter refuses CR/LF in reply text and treats a lone '%' as a format character, so
    both are removed here, once, for every caller.
    """
    folded = ascii_fold(" ".join(text.split())).replace("%", "")
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in folded)
    return cleaned if len(cleaned) <= MAX_REPLY_TEXT else cleaned[: MAX_REPLY_TEXT - 3] + "..."


def _ascii_header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


class PolicyEngine:
    def __init__(self, policy: PolicyData, verifier: SignatureVerifier) -> None:
        self.policy = policy
        self.verifier = verifier
        self.version: str = policy.version
        self.local_domains: frozenset[str] = policy.local_domains
        self._rules = enabled_rules(policy)
        # Compiled marking matchers, shared by every evaluation (keyed by declassified_is_marking).
        self._matchers: dict[bool, MarkingMatcher] = {}

    @classmethod
    def load(cls, bundle_path: Path | None = None, overrides_path: Path | None = None) -> PolicyEngine:
        policy = load_policy(bundle_path, overrides_path)
        anchors_dir = Path(policy.bundle.trust_anchors_dir) if policy.bundle.trust_anchors_dir else None
        anchors = load_anchors(anchors_dir)
        verifier = SignatureVerifier(anchors, timeout=policy.bundle.limits.signature_timeout_seconds)
        return cls(policy, verifier)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def evaluate(self, message: bytes, envelope: Envelope) -> Decision:
        """Decide on one message. Never raises on hostile content."""
        direction: Direction = "inbound"
        try:
            direction = derive_direction(envelope, self.local_domains)
            return self._evaluate(message, envelope, direction)
        except Exception as exc:  # a bug must not become silent acceptance
            log.exception("policy engine failed on queue id %s", envelope.queue_id)
            return self._failure(direction, f"{type(exc).__name__}: {exc}")

    def _evaluate(self, raw: bytes, envelope: Envelope, direction: Direction) -> Decision:
        started = time.monotonic()
        limits = self.policy.bundle.limits
        entity = split_entity(raw)
        if len(raw) > limits.max_message_bytes:
            extraction = Extraction(problems=[Problem(
                "message", "uninspectable", f"message is {len(raw)} bytes (limit {limits.max_message_bytes})")])
        else:
            extraction = extract(entity, limits)
        ctx = Context(self.policy, entity.headers, envelope.mail_from.strip().strip("<>"), envelope.rcpts, direction,
                      envelope.authenticated_user, extraction, matchers=self._matchers, entity=entity)
        if extraction.signed:
            ctx.signatures = self._verify_signatures(extraction, started)
        findings: list[Finding] = []
        for rule in self._rules:
            if direction not in rule.scope:
                continue
            for location, evidence in DETECTORS[rule.detector](ctx, rule):
                findings.append(Finding(rule.id, rule.clause, rule.action, location, evidence))
        return self._decide(findings, direction, ctx.signatures)

    def _verify_signatures(self, extraction: Extraction, started: float) -> list[SignatureResult]:
        """Verify up to ``max_signatures`` objects within what is left of the wall-clock budget."""
        limits = self.policy.bundle.limits
        results = []
        for index, obj in enumerate(extraction.signed):
            if index >= limits.max_signatures:
                results.append(SignatureResult(obj.location, obj.kind, "unverifiable",
                                               reason="too-many-signatures"))
                continue
            remaining = limits.max_wall_seconds - (time.monotonic() - started)
            results.append(self.verifier.verify(obj, timeout=remaining))
        return results

    def _decide(self, findings: list[Finding], direction: Direction,
                signatures: list[SignatureResult]) -> Decision:
        verdict: Verdict = "accept"
        strongest = None
        for finding in findings:
            rank = ACTION_STRENGTH.index(finding.action)
            if strongest is None or rank < strongest:
                strongest = rank
        if strongest is not None:
            verdict = _VERDICT_OF_ACTION[ACTION_STRENGTH[strongest]]
        headers: list[tuple[str, str]] = []
        if verdict in {"tag", "quarantine"}:
            listed = ", ".join(sorted({f"{f.rule} ({f.clause})" for f in findings if f.action != "log"}))
            headers.append(("X-QN-Policy", _ascii_header(f"{verdict}; version={self.version}; rules={listed}")))
        if verdict != "reject":
            headers.extend(("X-QN-Signature", _ascii_header(result.header_value())) for result in signatures)
        reply = self._reject_reply(findings) if verdict == "reject" else None
        return Decision(verdict, tuple(findings), self.version, direction, tuple(headers), reply)

    def _reject_reply(self, findings: list[Finding]) -> tuple[str, str, str]:
        first = next(f for f in findings if f.action == "reject")
        rule = self.policy.bundle.rule(first.rule)
        decision = self.policy.bundle.decision
        number = f" {decision.number}" if decision.number else ""
        location = first.location if len(first.location) <= 80 else "..." + first.location[-77:]
        text = (
            f"Thu bi tu choi theo khoan {rule.clause} Quyet dinh{number} cua UBND tinh Quang Ninh: {rule.vi} "
            f"/ Rejected under clause {rule.clause} of the Quang Ninh e-mail decision: {rule.en} "
            f"[{rule.id}; {location}; {self.version}]"
        )
        return ("550", "5.7.1", smtp_safe(text))

    def _failure(self, direction: Direction, reason: str) -> Decision:
        verdict: Verdict = self.policy.bundle.failure_verdict
        finding = Finding(_ENGINE_RULE, "2", verdict, "message", f"policy engine error: {reason[:200]}")
        reply = None
        if verdict == "tempfail":
            reply = ("451", "4.7.1", "Loi tam thoi khi kiem tra chinh sach, vui long gui lai sau / "
                                     "Temporary policy check failure, please retry later")
        headers: tuple[tuple[str, str], ...] = ()
        if verdict == "quarantine":
            headers = (("X-QN-Policy", f"quarantine; version={self.version}; rules={_ENGINE_RULE}"),)
        return Decision(verdict, (finding,), self.version, direction, headers, reply)
