"""Rate-limit refusals and burst alerts (rspamd's ratelimit, issue 13) in the compliance report.

The records are made as on a host: the journal entries rspamd's metadata exporter writes,
imported into the audit trail by ``audit import-ratelimit`` (qnprov.policy.ratelimit_audit).
The report section is reused from the rejected in-milter limiter branch; only the records'
origin differs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from qnprov.policy.audit import AuditLog
from qnprov.policy.ratelimit_audit import BURST_ID, EVENT_ID, import_entries
from qnprov.reporting import collect, render
from qnprov.reporting.compliance import build_document
from qnprov.reporting.figures import RATE_BURST_RULE, RATE_RULE_PREFIX
from qnprov_testing.browser import open_page


def _line(n: int, tag: str, **doc: Any) -> str:
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    body = {"refused": tag == EVENT_ID, "burst": tag == BURST_ID, "limits": [], "action": "soft reject",
            "recipients": 1, "external_recipients": 1, "queue_id": f"Q{n}", "message_id": f"m{n}@x", **doc}
    return json.dumps({"__CURSOR": f"c{n}", "__REALTIME_TIMESTAMP": str(now + n),
                       "MESSAGE": f"{tag} {json.dumps(body)}"})


def _document(tmp_path: Path, lines: list[str]) -> dict[str, Any]:
    with AuditLog(tmp_path / "audit", fsync="never") as log:
        import_entries(lines, log)
    today = dt.datetime.now(dt.UTC).date()
    return build_document([collect.parse_trail(f"mail1={tmp_path / 'audit'}")], today,
                          today + dt.timedelta(days=1))


def test_rule_names_agree_with_the_importer(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    with AuditLog(tmp_path / "audit", fsync="never") as log:
        import_entries([_line(1, EVENT_ID, user="a@x", limits=["qnprov_user_external"]),
                        _line(2, BURST_ID, user="a@x")], log)
    rules = [json.loads(line)["rule"] for f in sorted((tmp_path / "audit").iterdir()) for line in f.open()]
    assert rules == ["rate-user-external", RATE_BURST_RULE]
    assert all(rule.startswith(RATE_RULE_PREFIX) for rule in rules)


def test_refusals_and_burst_alerts_are_counted_per_agency_and_listed(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    clerk, hacked = "vanthu@syt.quangninh.test", "bilo@stttt.quangninh.test"
    document = _document(tmp_path, [
        _line(1, EVENT_ID, user=clerk, agency="SYT", limits=["qnprov_user_messages"], external_recipients=0),
        _line(2, BURST_ID, user=hacked, agency="STTTT", refused=False, action="no action"),
        _line(3, EVENT_ID, user=hacked, agency="STTTT", limits=["qnprov_user_external"], burst=True),
        _line(4, BURST_ID, user=hacked, agency="STTTT", limits=["qnprov_user_external"], refused=True),
    ])
    assert document["hosts"][0]["ok"] and document["hosts"][0]["records"] == 4
    assert document["rate_limits"] == [
        {"agency": "STTTT", "refusals": {"rate-user-external": 1}, "refused": 1, "burst_alerts": 2},
        {"agency": "SYT", "refusals": {"rate-user-messages": 1}, "refused": 1, "burst_alerts": 0},
    ]
    assert [(a["agency"], a["account"], a["evidence"]) for a in document["burst_alerts"]] == [
        ("STTTT", hacked, f"{hacked}: burst of external recipients; 1 recipients (1 external)")] * 2
    assert document["burst_alerts_total"] == 2
    # Clause 2 events: counted as events, never as any clause 1.x event.
    assert all(not any(actions.values()) for weeks in document["clauses"].values() for actions in weeks.values())
    assert document["totals"]["events"] == 4

    html = render.render_html(document, "en")
    assert '<table class="alert" id="burst-alerts">' in html
    assert html.count('class="burst-row"') == 2
    assert html.count('class="rate-row"') == 2
    assert ('<span class="rate-rule" data-rule="rate-user-external">External recipients per hour per account'
            '</span>: 1') in html
    assert '<span class="rate-rule" data-rule="rate-user-messages">Messages per hour per account</span>: 1' in html
    rows = list(csv.DictReader(io.StringIO(render.render_csv(document))))
    assert [(r["agency"], r["metric"], r["value"]) for r in rows if r["section"] == "rate_limits"] == [
        ("STTTT", "rate-user-external", "1"), ("STTTT", "burst_alerts", "2"),
        ("SYT", "rate-user-messages", "1"), ("SYT", "burst_alerts", "0")]


def test_burst_alerts_render_in_a_browser_as_text(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    hostile = "<img src=x onerror=console.error(9)>@stttt.quangninh.test"
    document = _document(tmp_path, [_line(1, BURST_ID, user=hostile, agency="STTTT")])
    page = tmp_path / "report.html"
    page.write_text(render.render_html(document), encoding="utf-8")
    run = open_page(page, {
        "bursts": "[...document.querySelectorAll('#burst-alerts tr.burst-row')].map(r => r.cells[2].textContent)",
        "visible": "document.querySelector('#burst-alerts').getBoundingClientRect().height",
        "images": "document.querySelectorAll('img').length",
    })
    assert run.console_errors == []
    assert run.values["bursts"] == [hostile]
    assert run.values["visible"] > 0 and run.values["images"] == 0


def test_recipients_per_message_refusals_are_their_own_kind_in_every_format(tmp_path: Path) -> None:
    """The per-message limits (the rspamd role's prefilter in qnprov_ratelimit.lua) name
    themselves in the info symbol like a bucket; each refused message is one refusal."""
    (tmp_path / "audit").mkdir()
    clerk, press = "vanthu@syt.quangninh.test", "baochi@syt.quangninh.test"
    document = _document(tmp_path, [
        _line(1, EVENT_ID, user=clerk, agency="SYT", limits=["qnprov_user_recipients_per_message"],
              recipients=101, external_recipients=0),
        _line(2, EVENT_ID, user=press, agency="SYT", limits=["qnprov_user_external_recipients_per_message"],
              recipients=60, external_recipients=51),
        _line(3, EVENT_ID, user=press, agency="SYT", limits=["qnprov_user_external_recipients_per_message"],
              recipients=51, external_recipients=51),
        _line(4, EVENT_ID, user=clerk, agency="SYT", limits=["qnprov_user_external"]),
    ])
    assert document["rate_limits"] == [{"agency": "SYT", "refused": 4, "burst_alerts": 0, "refusals": {
        "rate-user-external": 1, "rate-user-external-recipients-per-message": 2,
        "rate-user-recipients-per-message": 1}}]
    records = [json.loads(line) for f in sorted((tmp_path / "audit").iterdir()) for line in f.open()]
    assert [(r["clause"], r["rule"], r["action"], r["evidence"]) for r in records[:2]] == [
        ("2", "rate-user-recipients-per-message", "defer",
         f"{clerk}: over qnprov_user_recipients_per_message; 101 recipients (0 external)"),
        ("2", "rate-user-external-recipients-per-message", "defer",
         f"{press}: over qnprov_user_external_recipients_per_message; 60 recipients (51 external)")]

    for lang, total, external in (("en", "Recipients per message", "External recipients per message"),
                                  ("vi", "Người nhận trong một thư", "Người nhận ngoài hệ thống trong một thư")):
        html = render.render_html(document, lang)
        assert f'<span class="rate-rule" data-rule="rate-user-recipients-per-message">{total}</span>: 1' in html
        assert (f'<span class="rate-rule" data-rule="rate-user-external-recipients-per-message">{external}'
                '</span>: 2') in html
    rows = list(csv.DictReader(io.StringIO(render.render_csv(document))))
    assert [(r["metric"], r["value"]) for r in rows if r["section"] == "rate_limits"] == [
        ("rate-user-external", "1"), ("rate-user-external-recipients-per-message", "2"),
        ("rate-user-recipients-per-message", "1"), ("burst_alerts", "0")]
    assert json.loads(render.render_json(document))["rate_limits"] == document["rate_limits"]
