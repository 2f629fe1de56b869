"""Milter callbacks driven by pymilter's TestCtx (libmilter's callback order, no MTA),
with the real policy engine, real worker processes and a real audit file."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import Milter
import milter_corpus as corpus
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from qnprov.policy.agencies import StaticAgencyMap
from qnprov.policy.audit import verify_audit_log
from qnprov.policy.engine import Envelope
from qnprov.policy.milter import (
    EvaluationError,
    InlineEvaluator,
    MessageBuffer,
    MilterRuntime,
    MilterSettings,
    PolicyMilter,
    ProcessPoolEvaluator,
    ascii_reply,
    build_runtime,
)


class HoldingCtx(MilterTestCtx):
    """TestCtx with Postfix's HOLD recorded instead of unimplemented."""

    def __init__(self) -> None:
        super().__init__()
        self.held: str | None = None
        self.added: list[tuple[str, str]] = []

    def _negotiate(self) -> int:
        # TestCtx does not understand NOREPLY; ask for replies to every callback,
        # as an MTA without SMFIP_NR_* support would.
        rc = super()._negotiate()
        no_reply_bits = Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT | \
            Milter.P_NR_DATA | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY | Milter.P_NR_HDR
        self._priv._protocol &= ~no_reply_bits
        return rc

    def quarantine(self, reason: str) -> None:
        self.held = reason

    def addheader(self, field: str, value: str, idx: int) -> None:
        self.added.append((field, value))
        super().addheader(field, value, idx)


def _settings(tmp_path: Path, **changes: object) -> MilterSettings:
    values: dict[str, object] = {
        "workers": 0,
        "overrides": corpus.write_overrides(tmp_path),
        "audit_log": tmp_path / "audit.jsonl",
        "audit_fsync": "never",
    }
    values.update(changes)
    return MilterSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[MilterRuntime]:
    agency_map = tmp_path / "agencies.yml"
    agency_map.write_text(f"'@{corpus.DOMAIN}': STTTT\n", encoding="utf-8")
    built = build_runtime(_settings(tmp_path, agency_map=agency_map))
    yield built
    built.evaluator.close()
    if built.audit:
        built.audit.close()


def _feed(runtime: MilterRuntime, message: bytes, sender: str, *rcpts: str,
          daemon: str = "smtpd", auth: str | None = None, queue_id: str = "4ABCDEF123") -> tuple[int, HoldingCtx]:
    PolicyMilter.runtime = runtime
    Milter.factory = PolicyMilter
    ctx = HoldingCtx()
    ctx._setsymval("{daemon_name}", daemon)
    ctx._setsymval("{i}", queue_id)
    if auth:
        ctx._setsymval("{auth_authen}", auth)
    assert ctx._connect() == Milter.CONTINUE
    rc = ctx._feedFile(io.BytesIO(message), sender, *rcpts)
    return rc, ctx


def _audit(runtime: MilterRuntime) -> list[dict]:
    assert runtime.audit is not None
    return [json.loads(line) for line in runtime.audit.current_file.read_text(encoding="utf-8").splitlines()]


def test_clean_message_passes_unchanged_and_is_audited(runtime: MilterRuntime) -> None:
    message = corpus.clean_internal()
    rc, ctx = _feed(runtime, message, corpus.OFFICIAL, corpus.COLLEAGUE, auth=corpus.OFFICIAL)
    assert rc == Milter.CONTINUE
    assert ctx.added == [] and not ctx._bodyreplaced and ctx.held is None
    [record] = _audit(runtime)
    assert record["verdict"] == "accept" and record["queue_id"] == "4ABCDEF123"
    assert record["direction"] == "internal" and record["agency"] == "STTTT"
    assert record["authenticated_user"] == corpus.OFFICIAL
    assert record["message_id"].startswith("<")


def test_marked_subject_rejected_with_bilingual_5_7_1(runtime: MilterRuntime) -> None:
    rc, ctx = _feed(runtime, corpus.marked_subject(), corpus.OFFICIAL, corpus.COLLEAGUE, auth=corpus.OFFICIAL)
    assert rc == Milter.REJECT
    code, xcode, *lines = ctx._reply
    assert (code, xcode) == ("550", "5.7.1")
    text = " ".join(lines)
    assert "1.3(1)" in text and "Thu bi tu choi" in text and "Rejected" in text
    assert all(line.isascii() and len(line) <= 480 for line in lines)
    [record] = _audit(runtime)
    assert (record["rule"], record["clause"], record["action"]) == ("classified-marking", "1.3(1)", "reject")


def test_marked_docx_rejected_lookalike_accepted(runtime: MilterRuntime) -> None:
    rc, ctx = _feed(runtime, corpus.marked_docx(), corpus.OFFICIAL, corpus.COLLEAGUE, auth=corpus.OFFICIAL)
    assert rc == Milter.REJECT, ctx._reply
    assert "1.3(1)" in " ".join(ctx._reply[2:])
    rc, ctx = _feed(runtime, corpus.lookalike_docx(), corpus.OFFICIAL, corpus.COLLEAGUE, auth=corpus.OFFICIAL)
    assert rc == Milter.CONTINUE and ctx._reply is None


def test_registration_mail_tagged_and_audited_with_account(runtime: MilterRuntime) -> None:
    rc, ctx = _feed(runtime, corpus.registration(), "security@facebookmail.com", corpus.OFFICIAL)
    assert rc == Milter.CONTINUE
    names = [name for name, _ in ctx.added]
    assert "X-QN-Policy" in names
    value = dict(ctx.added)["X-QN-Policy"]
    assert value.startswith("tag") and "1.3(3)" in value
    [record] = _audit(runtime)
    assert record["verdict"] == "tag" and record["clause"] == "1.3(3)"
    assert record["recipients"] == [corpus.OFFICIAL] and record["agency"] == "STTTT"
    assert record["direction"] == "inbound"


def test_oversize_message_is_held_not_accepted(tmp_path: Path) -> None:
    built = build_runtime(_settings(tmp_path, max_body=4096))
    message = corpus.clean_internal().replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 10_000 + b"\r\n", 1)
    rc, ctx = _feed(built, message, corpus.OFFICIAL, corpus.COLLEAGUE)
    assert rc == Milter.CONTINUE
    assert ctx.held is not None and "1.3(1)" in ctx.held
    assert "X-QN-Policy" in dict(ctx.added)
    [record] = _audit(built)
    assert record["rule"] == "cannot-inspect-size" and record["verdict"] == "quarantine"
    reject = build_runtime(_settings(tmp_path / "r", max_body=4096, on_oversize="reject"))
    rc, ctx = _feed(reject, message, corpus.OFFICIAL, corpus.COLLEAGUE)
    assert rc == Milter.REJECT and ctx._reply[:2] == ("550", "5.7.1")


def test_reinjected_forward_to_freemail_refused_per_recipient(runtime: MilterRuntime) -> None:
    rc, ctx = _feed(runtime, corpus.clean_internal(), corpus.OFFICIAL, "someone@gmail.com", daemon="reinject")
    assert rc == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.7.1") and "1.3(2)" in " ".join(ctx._reply[2:])
    [record] = _audit(runtime)
    assert (record["rule"], record["clause"], record["recipients"]) == (
        "freemail-forward", "1.3(2)", ["someone@gmail.com"])
    # A vacation auto-reply (null sender) to a citizen's Gmail is not a forward.
    rc, ctx = _feed(runtime, _vacation_reply("citizen@gmail.com"), "", "citizen@gmail.com", daemon="reinject")
    assert rc == Milter.CONTINUE
    # The same recipient through the ordinary listener is outbound mail, logged not refused.
    rc, ctx = _feed(runtime, corpus.clean_internal(), corpus.OFFICIAL, "citizen@gmail.com",
                    auth=corpus.OFFICIAL)
    assert rc == Milter.CONTINUE
    assert _audit(runtime)[-1]["findings"][0]["rule"] == "freemail-outbound"


def _vacation_reply(to: str, *, redirected_from: str | None = None, auto_submitted: str | None = None) -> bytes:
    """What Pigeonhole's vacation action sends (cmd-vacation.c), optionally as a redirect would carry it."""
    from email.message import EmailMessage
    from email.policy import SMTP

    reply = EmailMessage()
    if redirected_from:
        reply["X-Sieve-Redirected-From"] = redirected_from
    reply["X-Sieve"] = "Pigeonhole Sieve 0.5.19 (4eae2f79)"
    reply["Message-ID"] = f"<dovecot-sieve-vacation.{abs(hash((to, redirected_from)))}@quangninh.test>"
    reply["From"] = corpus.OFFICIAL
    reply["To"] = f"Nguoi dan <{to}>"
    reply["Subject"] = "Tự động trả lời: Đang nghỉ phép"
    reply["In-Reply-To"] = "<hoi.thu.tuc@gmail.com>"
    reply["Auto-Submitted"] = auto_submitted or "auto-replied (vacation)"
    reply["Precedence"] = "bulk"
    reply.set_content("Tôi đang nghỉ phép đến thứ Hai.\n")
    return reply.as_bytes(policy=SMTP)


@pytest.mark.parametrize(("message", "why"), [
    (corpus.clean_internal(), "Auto-Submitted missing"),
    (_vacation_reply("citizen@gmail.com", redirected_from=corpus.OFFICIAL), "Sieve redirect"),
    (_vacation_reply("citizen@gmail.com", auto_submitted="auto-notified"), "Auto-Submitted: auto-notified"),
    (_vacation_reply("someone.else@gmail.com"), "not addressed to citizen@gmail.com"),
])
def test_reinjected_null_sender_to_freemail_refused_unless_an_auto_reply_to_it(
        runtime: MilterRuntime, message: bytes, why: str) -> None:
    """Issue 9 item 3: a redirect keeps the null sender (RFC 5228 4.2); only a reply to the citizen leaves."""
    rc, ctx = _feed(runtime, message, "", "citizen@gmail.com", daemon="reinject")
    assert rc == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.7.1") and "1.3(2)" in " ".join(ctx._reply[2:])
    [record] = _audit(runtime)
    assert (record["rule"], record["clause"], record["recipients"]) == (
        "freemail-forward", "1.3(2)", ["citizen@gmail.com"])
    assert why in record["findings"][0]["evidence"]


def test_reinjected_null_sender_to_a_hosted_or_government_mailbox_is_not_judged_as_forward(
        runtime: MilterRuntime) -> None:
    rc, _ = _feed(runtime, corpus.clean_internal(), "", corpus.COLLEAGUE, "vanthu@hanoi.gov.vn", daemon="reinject")
    assert rc == Milter.CONTINUE
    assert _audit(runtime)[-1]["verdict"] == "accept"


def test_engine_failure_uses_configured_failure_mode(tmp_path: Path) -> None:
    class Broken(InlineEvaluator):
        def evaluate(self, message: bytes, envelope: Envelope):  # type: ignore[no-untyped-def]
            raise EvaluationError("worker died")

    overrides = corpus.write_overrides(tmp_path)
    for mode, expected in (("tempfail", Milter.TEMPFAIL), ("accept", Milter.CONTINUE), ("reject", Milter.REJECT)):
        settings = _settings(tmp_path / mode, on_error=mode)
        built = build_runtime(settings, evaluator=Broken(None, overrides))
        rc, ctx = _feed(built, corpus.clean_internal(), corpus.OFFICIAL, corpus.COLLEAGUE)
        assert rc == expected, mode
        if mode == "tempfail":
            assert ctx._reply[0].startswith("4")
        assert _audit(built)[-1]["rule"] == "milter-error"


def test_process_pool_timeout_kills_worker_and_pool_recovers(tmp_path: Path) -> None:
    overrides = corpus.write_overrides(tmp_path)
    pool = ProcessPoolEvaluator(2, None, overrides, timeout=0.005)
    try:
        envelope = Envelope(corpus.OFFICIAL, (corpus.COLLEAGUE,), authenticated_user=corpus.OFFICIAL)
        with pytest.raises(EvaluationError, match="exceeded"):
            pool.evaluate(corpus.large_text(), envelope)
        pool._timeout = 20
        for _ in range(4):  # the surviving worker answers while the killed one is replaced
            assert pool.evaluate(corpus.clean_internal(), envelope).verdict == "accept"
    finally:
        pool.close()


def test_process_pool_shared_buffer_grows_and_shrinks_with_the_message(tmp_path: Path) -> None:
    """The message reaches the worker through its shared buffer, in pieces or whole, at any size."""
    overrides = corpus.write_overrides(tmp_path)
    inline = InlineEvaluator(None, overrides)
    pool = ProcessPoolEvaluator(1, None, overrides, timeout=60)
    try:
        envelope = Envelope(corpus.OFFICIAL, (corpus.COLLEAGUE,), authenticated_user=corpus.OFFICIAL)
        huge = corpus.large_text(lines=4000)  # ~7 MB: more than the buffer's initial size
        assert len(huge) > MessageBuffer.INITIAL
        for message in (corpus.marked_subject(), huge, corpus.marked_docx(), corpus.clean_internal(), huge):
            expected = inline.evaluate(message, envelope)
            head, _, body = message.partition(b"\r\n\r\n")
            pieces = [head + b"\r\n", b"\r\n", *(body[i:i + 65535] for i in range(0, len(body), 65535))]
            for sent in (message, pieces):
                decision = pool.evaluate(sent, envelope)
                assert (decision.verdict, decision.findings) == (expected.verdict, expected.findings)
        worker = pool._idle.queue[0]
        assert worker.buffer is not None and worker.buffer.size == MessageBuffer.INITIAL
    finally:
        pool.close()


def test_process_pool_without_shared_buffer_decides_the_same(tmp_path: Path) -> None:
    """The switch benchmarks/milter_pool.py measures: messages pickled through the pipe."""
    overrides = corpus.write_overrides(tmp_path)
    inline = InlineEvaluator(None, overrides)
    pool = ProcessPoolEvaluator(1, None, overrides, timeout=60, shared_buffer=False)
    try:
        envelope = Envelope(corpus.OFFICIAL, (corpus.COLLEAGUE,), authenticated_user=corpus.OFFICIAL)
        for message in (corpus.marked_subject(), corpus.marked_docx(), corpus.clean_internal()):
            expected = inline.evaluate(message, envelope)
            head, _, body = message.partition(b"\r\n\r\n")
            for sent in (message, [head + b"\r\n", b"\r\n", body]):
                decision = pool.evaluate(sent, envelope)
                assert (decision.verdict, decision.findings) == (expected.verdict, expected.findings)
        assert {expected.verdict for expected in (inline.evaluate(corpus.marked_subject(), envelope),
                                                  inline.evaluate(corpus.clean_internal(), envelope))} == {
            "reject", "accept"}
        (worker,) = pool._idle.queue
        assert worker.buffer is None  # nothing shared: the message really went through the pipe
    finally:
        pool.close()


def test_reload_switches_bundle_without_restarting_pool(tmp_path: Path) -> None:
    overrides = corpus.write_overrides(tmp_path)
    pool = ProcessPoolEvaluator(1, None, overrides, timeout=30)
    try:
        pids = pool.worker_pids()
        envelope = Envelope(corpus.OFFICIAL, (corpus.COLLEAGUE,), authenticated_user=corpus.OFFICIAL)
        assert pool.evaluate(corpus.marked_subject(), envelope).verdict == "reject"
        overrides.write_text(corpus.overrides_yaml(extra="rules:\n  classified-marking:\n    action: quarantine\n"),
                             encoding="utf-8")
        pool.reload(None, overrides)
        assert pool.evaluate(corpus.marked_subject(), envelope).verdict == "quarantine"
        assert pool.worker_pids() == pids
        overrides.write_text("rules: [this is not valid\n", encoding="utf-8")
        with pytest.raises(Exception, match=r"overrides|YAML|yaml"):
            pool.reload(None, overrides)
        assert pool.evaluate(corpus.marked_subject(), envelope).verdict == "quarantine"
    finally:
        pool.close()


def test_audit_chain_intact_after_many_decisions(runtime: MilterRuntime) -> None:
    for number in range(20):
        _feed(runtime, corpus.clean_internal(), corpus.OFFICIAL, corpus.COLLEAGUE, queue_id=f"Q{number:08d}")
    assert runtime.audit is not None
    result = verify_audit_log(runtime.audit.current_file, expected_head=runtime.audit.head())
    assert result.ok and result.records == 20


def test_reply_text_is_ascii_and_percent_safe() -> None:
    assert ascii_reply("Thư bị từ chối 100% theo khoản 1.3(1)") == "Thu bi tu choi 100 percent theo khoan 1.3(1)"


def test_static_agency_map_is_pluggable(tmp_path: Path) -> None:
    assert StaticAgencyMap({"@x.test": "X"}).agency_of("a@x.test") == "X"


def test_snapshots_of_dead_fronts_are_removed(tmp_path: Path) -> None:
    import tempfile

    from qnprov.policy.milter import PolicySnapshot

    # pid 999999999 is above Linux's pid_max: no such process.
    stale = Path(tempfile.mkdtemp(prefix=f"{PolicySnapshot.PREFIX}999999999-"))
    mine = PolicySnapshot(None, corpus.write_overrides(tmp_path))
    try:
        PolicySnapshot.remove_stale()
        assert not stale.exists()
        assert mine.overrides is not None and mine.overrides.exists()
    finally:
        mine.remove()
