"""The emergency block list: what a target may be, when an entry stops applying, what the milter decides."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from qnprov.errors import ConfigError, InputError
from qnprov.policy.audit import AuditLog, iter_audit_records
from qnprov.policy.engine import Envelope
from qnprov.policy.milter import InlineEvaluator, MilterRuntime, MilterSettings
from qnprov.policy.milter.blocklist import Block, BlockList, new_block, parse_expiry, parse_target

NOW = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "normal"), [
    ("Attacker@Example.COM", "attacker@example.com"),
    ("example.com", "example.com"),
    ("@Example.com", "example.com"),
    ("mail.example.com.", "mail.example.com"),
    ("ke.toan@bưuđiện.vn", "ke.toan@xn--buin-1ua66gr30m.vn"),
])
def test_targets_are_normalised(text: str, normal: str) -> None:
    assert parse_target(text) == normal


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty sender or domain"),
    ("localhost", "needs at least two labels"),
    ("a b@example.com", "no spaces"),
    ("<x@example.com>", "brackets"),
    ("x..y@example.com", "local part 'x..y'"),
    ("x@-bad.example", "label '-bad'"),
    ("x@exa_mple.com", "label 'exa_mple'"),
    ("x@", "needs at least two labels"),
])
def test_malformed_targets_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem.replace(".", r"\.").replace("(", r"\(")):
        parse_target(text)


def test_expiry_is_a_duration_or_a_date_time() -> None:
    assert parse_expiry("90s", NOW) == NOW + dt.timedelta(seconds=90)
    assert parse_expiry("30m", NOW) == NOW + dt.timedelta(minutes=30)
    assert parse_expiry("4h", NOW) == NOW + dt.timedelta(hours=4)
    assert parse_expiry("2w", NOW) == NOW + dt.timedelta(days=14)
    assert parse_expiry("2026-12-08T09:00:00+07:00", NOW) == dt.datetime(2026, 12, 8, 2, 0, tzinfo=dt.UTC)
    assert parse_expiry("2026-12-08 09:00", NOW) == dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)  # UTC
    with pytest.raises(InputError, match="duration"):
        parse_expiry("tomorrow", NOW)
    with pytest.raises(InputError, match="positive"):
        parse_expiry("0m", NOW)


def test_new_block_needs_a_reason() -> None:
    with pytest.raises(InputError, match="--reason"):
        new_block("x@example.com", "   ", now=NOW)
    block = new_block("X@Example.com", " phishing\n wave ", now=NOW, expires="1h")
    assert block == Block("x@example.com", "phishing wave", added=NOW, expires=NOW + dt.timedelta(hours=1))


def test_a_domain_blocks_its_subdomains_and_an_address_only_itself() -> None:
    blocks = BlockList((Block("example.com", "r"), Block("boss@corp.test", "r")))
    assert blocks.match(["a@example.com"], NOW) == (blocks.blocks[0], "a@example.com")
    assert blocks.match(["a@mx.EXAMPLE.com"], NOW) is not None
    assert blocks.match(["a@notexample.com"], NOW) is None
    assert blocks.match(["BOSS@corp.test"], NOW) is not None  # domains are case-blind; so is the whole match
    assert blocks.match(["other@corp.test"], NOW) is None
    assert blocks.match([""], NOW) is None  # the null sender is never blocked


def test_an_entry_stops_applying_when_it_expires_and_stays_in_the_file() -> None:
    blocks = BlockList((Block("example.com", "r", expires=NOW + dt.timedelta(minutes=5)),))
    assert blocks.match(["a@example.com"], NOW) is not None
    assert blocks.match(["a@example.com"], NOW + dt.timedelta(minutes=5)) is None
    assert blocks.targets() == ["example.com"]


def test_the_file_round_trips_and_an_empty_one_is_what_the_role_writes() -> None:
    assert BlockList().dump() == "blocks: []\n"
    blocks = BlockList((new_block("x@example.com", "lừa đảo", now=NOW, expires="1d"),))
    again = BlockList.parse(blocks.dump())
    assert again == blocks
    assert "lừa đảo" in blocks.dump()  # allow_unicode, as to_nice_yaml
    replaced = blocks.with_block(Block("x@example.com", "new reason"))
    assert [b.reason for b in replaced.blocks] == ["new reason"]
    assert replaced.without("x@example.com") == BlockList()


@pytest.mark.parametrize(("text", "problem"), [
    ("[1, 2]", "expected a mapping"),
    ("blocks:\n- target: x@example.com\n", "needs 'target' and 'reason'"),
    ("blocks:\n- {target: 'bad target', reason: r}\n", "blocks\\[0\\]: 'bad target'"),
    ("blocks:\n- {target: x@example.com, reason: r, expires: soon}\n", "not an ISO date-time"),
    ("blocks:\n- {target: x@example.com, reason: r, colour: red}\n", "unknown keys colour"),
    ("blocks: [", "not YAML"),
])
def test_a_broken_file_is_refused_with_the_place(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        BlockList.parse(text, "blocklist.yml")


def test_a_missing_file_is_an_empty_list(tmp_path: Path) -> None:
    assert BlockList.load(tmp_path / "absent.yml") == BlockList()


def _runtime(tmp_path: Path, blocks: BlockList) -> MilterRuntime:
    path = tmp_path / "blocklist.yml"
    path.write_text(blocks.dump(), encoding="utf-8")
    settings = MilterSettings(workers=0, blocklist=path)
    runtime = MilterRuntime(settings=settings, evaluator=InlineEvaluator(),
                            audit=AuditLog(tmp_path / "audit.jsonl", fsync="never"))
    assert runtime.reload_blocks() == len(blocks.blocks)
    return runtime


def test_the_milter_rejects_a_blocked_envelope_sender_and_audits_it(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, BlockList((Block("attacker@example.com", "phishing INC-42"),)))
    envelope = Envelope(mail_from="attacker@example.com", rcpts=("annv@quangninh.test",), queue_id="Q1")
    decision = runtime.block_decision(envelope, [("From", b"Someone <someone@elsewhere.test>")], now=NOW)
    assert decision is not None
    assert decision.verdict == "reject"
    assert decision.reply is not None and decision.reply[:2] == ("550", "5.7.1")
    assert "phishing INC-42" in decision.reply[2]
    runtime.record(decision, envelope, "<m1@example.com>")
    assert runtime.audit is not None
    runtime.audit.close()
    [record] = list(iter_audit_records(tmp_path / "audit.jsonl"))
    assert (record["verdict"], record["rule"]) == ("reject", "emergency-block")
    assert record["sender"] == "attacker@example.com"
    assert "envelope sender attacker@example.com matches block attacker@example.com: phishing INC-42" \
        in record["evidence"]


def test_the_milter_rejects_a_blocked_header_from_domain(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, BlockList((Block("evil.test", "spoofing"),)))
    envelope = Envelope(mail_from="annv@quangninh.test", rcpts=("x@quangninh.test",))
    decision = runtime.block_decision(envelope, [("from", b"=?utf-8?q?Ban?= <ceo@mail.evil.test>")], now=NOW)
    assert decision is not None
    assert decision.findings[0].location == "header"
    assert decision.findings[0].evidence.startswith("header From ceo@mail.evil.test matches block evil.test")


def test_an_expired_or_unrelated_entry_lets_mail_through(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, BlockList((Block("evil.test", "old", expires=NOW - dt.timedelta(seconds=1)),
                                            Block("other.test", "unrelated"))))
    envelope = Envelope(mail_from="a@evil.test", rcpts=("x@quangninh.test",))
    assert runtime.block_decision(envelope, [("From", b"a@evil.test")], now=NOW) is None


def test_a_broken_file_on_reload_keeps_the_running_list(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, BlockList((Block("evil.test", "r"),)))
    assert runtime.settings.blocklist is not None
    runtime.settings.blocklist.write_text("blocks: [", encoding="utf-8")
    with pytest.raises(ConfigError):
        runtime.reload_blocks()
    assert runtime.blocks.targets() == ["evil.test"]
