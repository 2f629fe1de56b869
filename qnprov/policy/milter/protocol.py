"""The libmilter callbacks: one :class:`PolicyMilter` per SMTP connection.

It buffers the message (bounded by ``max_body``), builds the envelope from the SMTP macros
and applies the runtime's decision (reply codes, HOLD, headers). It never changes the body
or an existing header, and knows nothing of processes: the evaluator behind the runtime
may be inline or a process pool.
"""

from __future__ import annotations

import textwrap
from typing import Any, Literal

import Milter

from qnprov.policy.engine import Decision, Envelope
from qnprov.policy.milter.decisions import (
    MilterRuntime,
    ascii_header,
    ascii_reply,
    policy_header_value,
    quarantine_reason,
)
from qnprov.policy.milter.settings import POLICY_HEADER, REPLY_LINE_LIMIT


def _address(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    return raw


def _flatten(value: bytes) -> str:
    return value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").strip()


class PolicyMilter(Milter.Base):
    """One instance per SMTP connection (libmilter thread)."""

    runtime: MilterRuntime  # set by serve() before the first connection

    def __init__(self) -> None:
        self.daemon_name: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.mail_from = ""
        self.rcpts: list[str] = []
        self.auth_user: str | None = None
        self.headers: list[tuple[str, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.oversize = False
        self.message_id: str | None = None

    # @noreply: Postfix does not wait for an answer to these callbacks, which
    # saves one round trip per header line and body chunk.
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.daemon_name = self.getsymval("{daemon_name}")
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset()
        self.mail_from = _address(mailfrom)
        self.auth_user = self.getsymval("{auth_authen}") or None
        return Milter.CONTINUE

    def _envelope(self, queue_id: str | None = None) -> Envelope:
        direction: Literal["outbound"] | None = (
            "outbound" if self.daemon_name in self.runtime.settings.reinject_daemons else None
        )
        return Envelope(
            mail_from=self.mail_from,
            rcpts=tuple(self.rcpts),
            direction=direction,
            authenticated_user=self.auth_user,
            queue_id=queue_id,
        )

    def envrcpt(self, to: str, *params: str) -> int:
        rcpt = _address(to)
        refused = None
        if self.daemon_name in self.runtime.settings.reinject_daemons:  # only the re-injection path forwards
            refused = self.runtime.forward_guard(self._envelope(self.getsymval("{i}")), self.daemon_name, rcpt)
        if refused is not None:
            forward_envelope = self._envelope(self.getsymval("{i}"))
            forward_envelope = type(forward_envelope)(
                mail_from=forward_envelope.mail_from, rcpts=(rcpt,), direction="outbound",
                authenticated_user=forward_envelope.authenticated_user, queue_id=forward_envelope.queue_id,
            )
            try:
                self.runtime.record(refused, forward_envelope, None)
            except OSError:
                return self._finish(self.runtime.error_decision(forward_envelope, "audit log unwritable"))
            return self._finish(refused)
        self.rcpts.append(rcpt)
        return Milter.CONTINUE

    @Milter.decode("bytes")
    @Milter.noreply
    def header(self, name: str, value: bytes) -> int:
        self.size += len(name) + len(value) + 4
        if name.lower() == "message-id" and self.message_id is None:
            self.message_id = _flatten(value)[:200]
        if self.size > self.runtime.settings.max_body:
            self.oversize = True
        else:
            self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.oversize or self.size > self.runtime.settings.max_body:
            # Keep reading (the MTA must get our verdict at end of message)
            # but stop buffering: memory stays bounded by max_body.
            self.oversize = True
            self.chunks.clear()
            return Milter.CONTINUE
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def message_parts(self) -> list[bytes]:
        """The message as received, in pieces: header block, blank line, body chunks."""
        head = b"".join(name.encode("ascii", "replace") + b": " + value + b"\r\n" for name, value in self.headers)
        return [head, b"\r\n", *self.chunks]

    def eom(self) -> int:
        envelope = self._envelope(self.getsymval("{i}"))
        refused = self.runtime.block_decision(envelope, self.headers)
        if refused is None and self.daemon_name in self.runtime.settings.reinject_daemons:
            # Headers beyond max_body are not kept, so an oversize message is judged on
            # what was kept; a redirect header sits at the top and is always among them.
            refused = self.runtime.null_sender_forward_guard(envelope, self.daemon_name, self.headers)
        if refused is not None:
            return self._record_and_finish(refused, envelope)
        if self.oversize:
            decision = self.runtime.oversize_decision(envelope, self.size)
        else:
            decision = self.runtime.decide(self.message_parts(), envelope)
        return self._record_and_finish(decision, envelope)

    def _record_and_finish(self, decision: Decision, envelope: Envelope) -> int:
        """Drop the buffered body, audit the decision, then apply it. A decision that cannot
        be audited is not applied: the on-error decision ("audit log unwritable") is."""
        self.chunks = []
        try:
            self.runtime.record(decision, envelope, self.message_id)
        except OSError:
            decision = self.runtime.error_decision(envelope, "audit log unwritable")
        return self._finish(decision)

    def _finish(self, decision: Decision) -> int:
        verdict = decision.verdict
        if verdict == "reject":
            self._reply(decision.reply or ("550", "5.7.1", "Message refused by the mail policy"))
            return Milter.REJECT
        if verdict == "tempfail":
            self._reply(decision.reply or ("451", "4.3.0", "Policy check temporarily unavailable"))
            return Milter.TEMPFAIL
        headers = list(decision.add_headers)
        if verdict in ("tag", "quarantine") and not any(n.lower() == POLICY_HEADER.lower() for n, _ in headers):
            headers.append((POLICY_HEADER, policy_header_value(decision)))
        for name, value in headers:
            self.addheader(name, ascii_header(value))
        if verdict == "quarantine":
            self.quarantine(ascii_reply(quarantine_reason(decision)))
        return Milter.CONTINUE

    def _reply(self, reply: tuple[str, str, str]) -> None:
        code, xcode, text = reply
        # Long bilingual texts become a multi-line reply, broken at spaces.
        lines = textwrap.wrap(ascii_reply(" ".join(text.split())), width=REPLY_LINE_LIMIT) if text.strip() else []
        self.setreply(code, xcode, *(lines or ["Refused by policy"]))
