"""The outbound limits' journal events (rspamd's metadata exporter, issue 13) become
hash-chained audit records that the audit report counts under clause 2."""

from __future__ import annotations

import json
from pathlib import Path

from qnprov.policy.audit import AuditLog, iter_audit_records, verify_audit_log
from qnprov.policy.audit_report import summarise
from qnprov.policy.ratelimit_audit import audit_event, import_entries

T0 = 1_796_000_000_000_000  # microseconds, 2026-11-30


def _entry(n: int, tag: str, doc: dict[str, object]) -> str:
    return json.dumps({"__CURSOR": f"s=abc;i={n}", "__REALTIME_TIMESTAMP": str(T0 + n * 1_000_000),
                       "SYSLOG_IDENTIFIER": "qnprov-ratelimit", "PRIORITY": "4",
                       "MESSAGE": f"{tag} {json.dumps(doc)}"})


REFUSAL = {"refused": True, "burst": False, "limits": ["qnprov_user_external"],
           "action": "soft reject", "user": "annv@quangninh.test", "agency": "SKHCN", "recipients": 2,
           "external_recipients": 1, "queue_id": "4ABC123", "message_id": "<m1@quangninh.test>", "ip": "10.88.0.1"}
BURST = {**REFUSAL, "refused": False, "burst": True, "limits": [], "action": "no action",
         "queue_id": ""}


def test_a_refusal_becomes_a_clause_2_defer_record() -> None:
    event = audit_event(json.loads(_entry(1, "QNPROV-RATELIMIT", REFUSAL)))
    assert event is not None
    assert (event["source"], event["clause"], event["rule"], event["action"], event["verdict"]) == (
        "rspamd-ratelimit", "2", "rate-user-external", "defer", "defer")
    assert (event["authenticated_user"], event["agency"], event["agencies"]) == (
        "annv@quangninh.test", "SKHCN", ["SKHCN"])
    assert event["queue_id"] == "4ABC123" and event["recipients"] == []
    assert event["evidence"] == "annv@quangninh.test: over qnprov_user_external; 2 recipients (1 external)"
    assert event["time"] == "2026-11-30T00:53:21.000+00:00"


def test_a_burst_is_an_alert_finding_and_other_lines_are_ignored() -> None:
    event = audit_event(json.loads(_entry(2, "QNPROV-RATE-BURST", BURST)))
    assert event is not None
    assert [(f["rule"], f["action"]) for f in event["findings"]] == [("rate-burst", "alert")]
    assert event["verdict"] == "accept" and event["queue_id"] is None
    # A refused message of a burst: the alert line carries only the burst finding.
    both = {**REFUSAL, "burst": True}
    alert = audit_event(json.loads(_entry(3, "QNPROV-RATE-BURST", both)))
    refusal = audit_event(json.loads(_entry(3, "QNPROV-RATELIMIT", both)))
    assert alert is not None and refusal is not None
    assert [f["rule"] for f in alert["findings"]] == ["rate-burst"]
    assert [f["rule"] for f in refusal["findings"]] == ["rate-user-external"]
    assert audit_event({"MESSAGE": "something else", "__REALTIME_TIMESTAMP": str(T0)}) is None
    assert audit_event({"MESSAGE": "QNPROV-RATELIMIT not-json", "__REALTIME_TIMESTAMP": str(T0)}) is None


def test_import_chains_the_records_and_the_report_counts_them(tmp_path: Path) -> None:
    lines = [_entry(1, "QNPROV-RATELIMIT", REFUSAL), _entry(2, "QNPROV-RATE-BURST", BURST),
             json.dumps({"__CURSOR": "s=abc;i=3", "__REALTIME_TIMESTAMP": str(T0), "MESSAGE": "unrelated"})]
    with AuditLog(tmp_path) as log:
        written, cursor = import_entries(lines, log)
    assert (written, cursor) == (2, "s=abc;i=3")
    result = verify_audit_log(tmp_path)
    assert result.ok and result.records == 2
    rows = summarise(iter_audit_records(tmp_path), by="rule")
    assert [(r.key, r.clause, r.action, r.count) for r in rows] == [
        ("rate-burst", "2", "alert", 1), ("rate-user-external", "2", "defer", 1)]


def test_the_entry_imported_last_time_is_not_imported_again(tmp_path: Path) -> None:
    # journalctl --cursor C starts AT the entry imported last time (inclusive).
    lines = [_entry(1, "QNPROV-RATELIMIT", REFUSAL), _entry(2, "QNPROV-RATE-BURST", BURST)]
    with AuditLog(tmp_path) as log:
        assert import_entries(lines, log, after="s=abc;i=1") == (1, "s=abc;i=2")
        assert import_entries(lines[1:], log, after="s=abc;i=2") == (0, "s=abc;i=2")
    assert [r["rule"] for r in iter_audit_records(tmp_path)] == ["rate-burst"]
