"""Audit trail: hash chain, tamper detection, concurrency, daily files, reports."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnprov.policy.agencies import StaticAgencyMap, agencies_for
from qnprov.policy.audit import (
    GENESIS_HASH,
    AuditLog,
    build_decision_event,
    iter_audit_records,
    record_hash,
    verify_audit_log,
)
from qnprov.policy.audit_report import summarise
from qnprov.policy.milter_cli import audit_app

REJECT_DOCX = {
    "verdict": "reject",
    "direction": "outbound",
    "policy_version": "2014-test",
    "findings": [
        {"rule": "classified-marking", "clause": "1.3(1)", "action": "reject",
         "location": "attachment:cv.docx", "evidence": "TỐI MẬT " + "x" * 400},
    ],
}
TAG_REGISTRATION = {
    "verdict": "tag",
    "direction": "inbound",
    "policy_version": "2014-test",
    "findings": [
        {"rule": "registration-mail", "clause": "1.3(3)", "action": "tag",
         "location": "envelope", "evidence": "facebookmail.com"},
    ],
}
AGENCIES = StaticAgencyMap({"a@quangninh.test": "STTTT", "@ubnd.quangninh.test": "UBND"})


def _event(decision: dict, sender: str, rcpts: list[str], n: int = 0) -> dict:
    direction = decision["direction"]
    return build_decision_event(
        decision=decision, queue_id=f"Q{n:04d}", message_id=f"<m{n}@x>", sender=sender,
        recipients=rcpts, agencies=agencies_for(AGENCIES, direction, sender, rcpts),
    )


def _write(path: Path, count: int) -> list[dict]:
    with AuditLog(path, fsync="never") as log:
        return [log.append(_event(REJECT_DOCX, "a@quangninh.test", ["x@gmail.com"], n)) for n in range(count)]


def test_chain_links_every_line_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = _write(path, 5)
    assert written[0]["prev"] == GENESIS_HASH
    for before, after in itertools.pairwise(written):
        assert after["prev"] == before["hash"]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert first["hash"] == record_hash(first)
    assert first["agency"] == "STTTT" and first["clause"] == "1.3(1)" and first["action"] == "reject"
    assert len(first["evidence"]) <= 200
    result = verify_audit_log(path, expected_head=written[-1]["hash"])
    assert result.ok and result.records == 5 and result.head == written[-1]["hash"]


def test_writer_resumes_chain_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = _write(path, 2)
    second = _write(path, 1)
    assert second[0]["prev"] == first[-1]["hash"]
    assert verify_audit_log(path).ok


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap", "truncate_tail", "torn"])
def test_verify_names_first_bad_line(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "audit.jsonl"
    written = _write(path, 6)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    expected_line = 3
    if tamper == "edit":
        lines[2] = lines[2].replace('"reject"', '"accept"', 1)
    elif tamper == "delete":
        del lines[2]
    elif tamper == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "truncate_tail":
        lines = lines[:4]
        expected_line = 4
    elif tamper == "torn":
        lines[-1] = lines[-1][:-10]
        expected_line = 6
    path.write_text("".join(lines), encoding="utf-8")
    result = verify_audit_log(path, expected_head=written[-1]["hash"])
    assert not result.ok
    assert result.bad_line == expected_line, result
    assert result.reason


def _worker(path: str, worker: int) -> None:
    with AuditLog(Path(path), fsync="never") as log:
        for n in range(50):
            log.append(_event(TAG_REGISTRATION, "noreply@facebookmail.com", ["a@quangninh.test"], worker * 100 + n))


def test_several_processes_share_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(str(path), w)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    result = verify_audit_log(path)
    assert result.ok, result
    assert result.records == 200


def test_daily_directory_chains_across_days(tmp_path: Path) -> None:
    older = tmp_path / "audit-2020-01-01.jsonl"
    old_records = _write(older, 3)
    with AuditLog(tmp_path, fsync="never") as log:
        record = log.append(_event(TAG_REGISTRATION, "noreply@facebookmail.com", ["a@quangninh.test"]))
        assert log.current_file.name == f"audit-{dt.datetime.now(dt.UTC):%Y-%m-%d}.jsonl"
    assert record["prev"] == old_records[-1]["hash"]
    assert verify_audit_log(tmp_path).ok
    older.unlink()  # retention pruned the oldest day: still verifies, with a warning
    pruned = verify_audit_log(tmp_path)
    assert pruned.ok and pruned.warnings
    assert not verify_audit_log(tmp_path, require_genesis=True).ok


def test_report_by_agency_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never") as log:
        log.append(_event(REJECT_DOCX, "a@quangninh.test", ["x@gmail.com"], 1))
        log.append(_event(REJECT_DOCX, "a@quangninh.test", ["y@gmail.com"], 2))
        log.append(_event(TAG_REGISTRATION, "no@facebookmail.com", ["b@ubnd.quangninh.test"], 3))
        accept = {"verdict": "accept", "direction": "inbound", "policy_version": "t", "findings": []}
        log.append(_event(accept, "c@example.org", ["a@quangninh.test"], 4))
    records = list(iter_audit_records(path))
    by_agency = {(r.key, r.rule): r.count for r in summarise(records, by="agency")}
    assert by_agency == {("STTTT", "classified-marking"): 2, ("UBND", "registration-mail"): 1}
    by_rule = {r.key: r.count for r in summarise(records, by="rule")}
    assert by_rule == {"classified-marking": 2, "registration-mail": 1}
    with_accepts = summarise(records, by="rule", include_accept=True)
    assert sum(r.count for r in with_accepts) == 4


def test_static_agency_map(tmp_path: Path) -> None:
    path = tmp_path / "agencies.yml"
    path.write_text("a@QuangNinh.test: STTTT\n'@ubnd.quangninh.test': UBND\n", encoding="utf-8")
    agencies = StaticAgencyMap.from_file(path)
    assert agencies.agency_of("<A@quangninh.test>") == "STTTT"
    assert agencies.agency_of("z@ubnd.quangninh.test") == "UBND"
    assert agencies.agency_of("z@gmail.com") is None
    assert agencies_for(agencies, "inbound", "x@gmail.com", ["a@quangninh.test", "z@ubnd.quangninh.test"]) == [
        "STTTT", "UBND"]


def test_cli_verify_and_report(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = _write(path, 3)
    runner = CliRunner()
    ok = runner.invoke(audit_app, ["verify", str(path), "--expect-head", written[-1]["hash"]])
    assert ok.exit_code == 0, ok.output
    assert "3 records" in ok.output
    report = runner.invoke(audit_app, ["report", str(path), "--by", "agency", "--json"])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.output)
    assert rows[0]["key"] == "STTTT" and rows[0]["count"] == 3
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([lines[0], lines[2]]), encoding="utf-8")
    bad = runner.invoke(audit_app, ["verify", str(path)])
    assert bad.exit_code == 1
    assert "line 2" in bad.output
    missing = runner.invoke(audit_app, ["verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output


def test_verify_visits_each_good_record_once_and_stops_at_the_first_bad(tmp_path: Path) -> None:
    # The compliance report counts in the verifier's one pass (visit=): it must see exactly
    # the records that checked out, in order, and none from the first bad line on.
    path = tmp_path / "audit.jsonl"
    written = _write(path, 6)
    seen: list[dict] = []
    assert verify_audit_log(path, visit=seen.append).ok
    assert seen == written
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    edited = json.loads(lines[3])
    edited["sender"] = "b@quangninh.test"
    lines[3] = json.dumps(edited, ensure_ascii=False) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    seen.clear()
    result = verify_audit_log(path, visit=seen.append)
    assert (result.ok, result.bad_line, result.records) == (False, 4, 3)
    assert seen == written[:3]
