"""The decisions the front takes itself, and how a decision becomes SMTP replies and headers.

Oversize mail, engine failures and the clause 1.3(2) forward guard on the re-injection path
are decided here without the engine; every decision, the engine's or its own, is written to
the audit log by :class:`MilterRuntime`.
"""

from __future__ import annotations

import datetime as dt
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.header import Header
from email.utils import getaddresses

from qnprov.policy.agencies import AgencyResolver, NoAgencyResolver, agencies_for
from qnprov.policy.audit import AuditLog, build_decision_event
from qnprov.policy.domains import is_freemail
from qnprov.policy.engine import Decision, Envelope, Finding, derive_direction
from qnprov.policy.milter.blocklist import BlockList
from qnprov.policy.milter.evaluator import EvaluationError, Evaluator, MessageData
from qnprov.policy.milter.settings import REPLY_LINE_LIMIT, MilterSettings

log = logging.getLogger("qnprov.milter")


def ascii_reply(text: str) -> str:
    """SMTP reply text must be printable ASCII (and libmilter rejects a lone '%').

    Vietnamese loses its tone marks here; the full text is in the audit record
    and in the bundle, the reply only has to tell the sender which clause.
    """
    text = text.replace("đ", "d").replace("Đ", "D")
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in folded).replace("%", " percent")
    return cleaned[: REPLY_LINE_LIMIT * 3]


def synthetic_decision(
    verdict: str,
    *,
    rule: str,
    clause: str,
    evidence: str,
    envelope: Envelope,
    evaluator: Evaluator,
    reply: tuple[str, str, str] | None,
    location: str = "message",
) -> Decision:
    """A decision the front takes itself (oversize, engine failure, forward guard)."""
    return Decision(
        verdict=verdict,  # type: ignore[arg-type]
        findings=(Finding(rule=rule, clause=clause, action=verdict, location=location, evidence=evidence),),
        policy_version=evaluator.version,
        direction=derive_direction(envelope, evaluator.local_domains),
        add_headers=(),
        reply=reply,
    )


@dataclass
class MilterRuntime:
    """Shared by every connection thread of the front process."""

    settings: MilterSettings
    evaluator: Evaluator
    audit: AuditLog | None = None
    agencies: AgencyResolver = field(default_factory=NoAgencyResolver)
    blocks: BlockList = field(default_factory=BlockList)
    decisions: int = 0

    def reload_blocks(self) -> int:
        """Re-read the block list (on reload); a broken file keeps the running list."""
        self.blocks = BlockList.load(self.settings.blocklist)
        return len(self.blocks.blocks)

    def block_decision(self, envelope: Envelope, headers: Sequence[tuple[str, bytes]],
                       now: dt.datetime | None = None) -> Decision | None:
        """Reject mail whose envelope sender or header From matches an unexpired emergency block."""
        if not self.blocks.blocks:
            return None
        from_addresses = sorted(_header_addresses([value for name, value in headers if name.lower() == "from"]))
        candidates = [("envelope sender", envelope.mail_from)] + [("header From", a) for a in from_addresses]
        when = now or dt.datetime.now(dt.UTC)
        for where, address in candidates:
            found = self.blocks.match([address], when)
            if found is None:
                continue
            block, _ = found
            until = f", until {block.expires.isoformat(timespec='seconds')}" if block.expires else ""
            text = f"Sender blocked by the mail administrators: {block.reason}"
            return synthetic_decision(
                "reject", rule="emergency-block", clause="block",
                location="envelope" if where.startswith("env") else "header",
                evidence=f"{where} {address} matches block {block.target}: {block.reason}{until}",
                envelope=envelope, evaluator=self.evaluator, reply=("550", "5.7.1", text),
            )
        return None

    def record(
        self,
        decision: Decision,
        envelope: Envelope,
        message_id: str | None,
    ) -> None:
        self.decisions += 1
        if self.audit is None:
            return
        event = build_decision_event(
            decision=decision.to_json(),
            queue_id=envelope.queue_id,
            message_id=message_id,
            sender=envelope.mail_from,
            recipients=envelope.rcpts,
            agencies=agencies_for(self.agencies, decision.direction, envelope.mail_from, envelope.rcpts),
            authenticated_user=envelope.authenticated_user,
            direction=decision.direction,
        )
        try:
            self.audit.append(event)
        except OSError:
            # A decision we cannot record must not pass silently either:
            # the caller turns this into the on_error verdict.
            log.exception("audit log write failed")
            raise

    def error_decision(self, envelope: Envelope, reason: str) -> Decision:
        on_error = self.settings.on_error
        reply: tuple[str, str, str] | None = None
        if on_error == "tempfail":
            reply = ("451", "4.3.0", "Policy check temporarily unavailable, please retry later")
        elif on_error == "reject":
            reply = ("550", "5.7.1", "Message could not be checked against the mail policy")
        return synthetic_decision(
            on_error, rule="milter-error", clause="-", evidence=reason, envelope=envelope,
            evaluator=self.evaluator, reply=reply,
        )

    def oversize_decision(self, envelope: Envelope, size: int) -> Decision:
        verdict = self.settings.on_oversize
        text = (
            f"Thu qua lon de kiem tra (> {self.settings.max_body} bytes), khong the kiem tra theo khoan 1.3(1)"
            f" / Message too large to inspect (> {self.settings.max_body} bytes): cannot be checked for 1.3(1)"
        )
        reply = {"reject": ("550", "5.7.1", text), "tempfail": ("452", "4.3.1", text)}.get(verdict)
        return synthetic_decision(
            verdict, rule="cannot-inspect-size", clause="1.3(1)",
            evidence=f"message of at least {size} bytes exceeds the {self.settings.max_body}-byte inspection limit",
            envelope=envelope, evaluator=self.evaluator, reply=reply,
        )

    def decide(self, message: MessageData, envelope: Envelope) -> Decision:
        try:
            return self.evaluator.evaluate(message, envelope)
        except EvaluationError as exc:
            log.error("queue %s: %s; applying on_error=%s", envelope.queue_id, exc, self.settings.on_error)
            return self.error_decision(envelope, str(exc))

    def forward_guard(self, envelope: Envelope, daemon_name: str | None, rcpt: str) -> Decision | None:
        """Clause 1.3(2) on the re-injection path: a non-null sender re-injected
        towards a free mailbox is a forward (Sieve redirect, user rule).

        A null sender is decided at end of message (:meth:`null_sender_forward_guard`):
        a Sieve redirect of a bounce or an auto-reply keeps the null sender (RFC 5228
        section 4.2), and so does a vacation reply; only the headers tell them apart.
        """
        if daemon_name not in self.settings.reinject_daemons or not envelope.mail_from:
            return None
        if not is_freemail(rcpt):
            return None
        return self._forward_refusal(envelope, f"forward to {rcpt} via {daemon_name}", "envelope")

    def null_sender_forward_guard(
        self, envelope: Envelope, daemon_name: str | None, headers: Sequence[tuple[str, bytes]],
    ) -> Decision | None:
        """Clause 1.3(2) for null-sender mail re-injected towards free mailboxes.

        Only an auto-reply to the free-mail recipient itself goes out (a vacation reply,
        or a Sieve reject, to a citizen who wrote from a free mailbox); a redirect of a
        null-sender message, or a notification, is refused like any other forward.
        """
        if daemon_name not in self.settings.reinject_daemons or envelope.mail_from:
            return None
        freemail = [rcpt for rcpt in envelope.rcpts if is_freemail(rcpt)]
        if not freemail:
            return None
        why = auto_reply_refusal(headers, freemail)
        if why is None:
            return None
        return self._forward_refusal(
            envelope, f"null-sender forward to {', '.join(freemail)} via {daemon_name}: {why}", "message")

    def _forward_refusal(self, envelope: Envelope, evidence: str, location: str) -> Decision:
        text = (
            "Chuyen tiep thu cong vu sang hop thu mien phi bi cam (khoan 1.3(2))"
            " / Forwarding official mail to a free mailbox is forbidden (clause 1.3(2))"
        )
        return synthetic_decision(
            "reject", rule="freemail-forward", clause="1.3(2)", evidence=evidence,
            envelope=envelope, evaluator=self.evaluator, reply=("550", "5.7.1", text), location=location,
        )


#: Pigeonhole prepends this to every message its ``redirect`` action sends.
SIEVE_REDIRECT_HEADER = "x-sieve-redirected-from"


def _header_addresses(values: Sequence[bytes]) -> set[str]:
    text = [value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ") for value in values]
    return {addr.strip().lower().rstrip(".") for _, addr in getaddresses(text) if addr.strip()}


def auto_reply_refusal(headers: Sequence[tuple[str, bytes]], recipients: Sequence[str]) -> str | None:
    """Why a null-sender message to ``recipients`` is not an auto-reply to them (None: it is one).

    An auto-reply (RFC 3834) says ``Auto-Submitted: auto-replied``, is addressed to the
    person it answers (the ``To`` header names every envelope recipient) and was not
    redirected: Pigeonhole adds ``X-Sieve-Redirected-From`` to every redirect, on top of
    whatever the original message carried, so a forged ``Auto-Submitted`` in a
    redirected message does not make it a reply.
    """
    names = [name.lower() for name, _ in headers]
    if SIEVE_REDIRECT_HEADER in names:
        return "Sieve redirect"
    auto = [value for name, value in headers if name.lower() == "auto-submitted"]
    if len(auto) != 1:
        return "not an auto-reply (Auto-Submitted missing or repeated)"
    keyword = auto[0].decode("ascii", "replace").split(";")[0].split("(")[0].strip().lower()
    if keyword != "auto-replied":
        return f"not an auto-reply (Auto-Submitted: {keyword or 'empty'})"
    addressed = _header_addresses([value for name, value in headers if name.lower() == "to"])
    missing = [rcpt for rcpt in recipients if rcpt.lower().rstrip(".") not in addressed]
    if missing:
        return f"the reply is not addressed to {', '.join(missing)}"
    return None


def policy_header_value(decision: Decision) -> str:
    parts = [f"{decision.verdict}"]
    for finding in decision.findings:
        parts.append(f"rule={finding.rule}; clause={finding.clause}; action={finding.action}")
    parts.append(f"policy={decision.policy_version}")
    return "; ".join(parts)


def quarantine_reason(decision: Decision) -> str:
    held = [f for f in decision.findings if f.action == "quarantine"] or list(decision.findings)
    if not held:
        return "qnprov policy hold"
    first = held[0]
    return f"qnprov {first.clause} {first.rule}: {first.evidence}"[:200]


def ascii_header(value: str) -> str:
    """Header values we add stay 7-bit so no downstream MTA rewrites the message."""
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=998)
