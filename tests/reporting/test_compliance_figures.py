"""The compliance report's figures over synthetic fleets: counts, filters, tampering, formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from pathlib import Path

import pytest
from fleet_data import HOSTS, SINCE, UNTIL, Fleet, directory_view
from typer.testing import CliRunner

from qnprov.cli import app
from qnprov.errors import InputError
from qnprov.reporting import collect, render
from qnprov.reporting.compliance import build_document, parse_period
from qnprov.reporting.figures import CLAUSES
from qnprov_testing import audit_trails


def _trails(fleet: Fleet, dirs: dict[str, Path] | None = None) -> list[collect.HostTrail]:
    return [collect.parse_trail(f"{host}={path}") for host, path in (dirs or fleet.dirs).items()]


def test_weekly_figures_per_clause_and_action_equal_the_trails(fleet: Fleet) -> None:
    document = build_document(_trails(fleet), SINCE, UNTIL)
    expected = fleet.expected()
    assert document["weeks"] == ["2026-10-26", "2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23",
                                 "2026-11-30"]
    got = {(clause, week, action): n for clause, weeks in document["clauses"].items()
           for week, actions in weeks.items() for action, n in actions.items() if n}
    assert got == dict(expected["weekly"])
    # Events outside [since, until) were verified (their hosts' record counts) but not counted.
    in_period = fleet.in_period()
    assert document["totals"]["records_in_period"] == len(in_period)
    assert document["totals"]["events"] == sum(1 for e in in_period if e["findings"])
    assert document["totals"]["records_read"] == 3 * 1500 > len(in_period)
    assert [(h["host"], h["ok"], h["records"], h["bad_line"]) for h in document["hosts"]] == [
        (host, True, 1500, None) for host in HOSTS]


def test_agencies_registrations_and_freemail(fleet: Fleet) -> None:
    document = build_document(_trails(fleet), SINCE, UNTIL)
    expected = fleet.expected()
    assert {row["agency"]: row["events"] for row in document["agencies"]} == dict(expected["per_agency"])
    for row in document["agencies"]:
        assert sum(row["by_clause"].values()) == row["events"]
        assert row["accounts"] is None and row["per_100_accounts"] is None  # no directory
    assert {(r["agency"], r["address"]): r["count"] for r in document["registrations"]} == expected["registrations"]
    assert len(document["registrations"]) == 9  # three accounts per agency register, all repeatedly
    assert {r["agency"]: (r["outbound_to_freemail"], r["blocked_forwarding"]) for r in document["freemail"]} == {
        code: (c["outbound"], c["blocked"]) for code, c in expected["freemail"].items()}
    assert document["directory"]["available"] is False


def test_agency_filter_keeps_one_agency(fleet: Fleet) -> None:
    document = build_document(_trails(fleet), SINCE, UNTIL, agency="SYT")
    expected = fleet.expected("SYT")
    got = {(clause, week, action): n for clause, weeks in document["clauses"].items()
           for week, actions in weeks.items() for action, n in actions.items() if n}
    assert got == dict(expected["weekly"])
    assert [row["agency"] for row in document["agencies"]] == ["SYT"]
    assert {r["agency"] for r in document["registrations"]} == {"SYT"}
    assert [r["agency"] for r in document["freemail"]] == ["SYT"]
    assert document["totals"]["records_in_period"] == len(fleet.in_period("SYT"))


def _tampered(fleet: Fleet, tmp_path: Path) -> tuple[dict[str, Path], str, int]:
    dirs = {}
    for host, path in fleet.dirs.items():
        dirs[host] = tmp_path / host
        shutil.copytree(path, dirs[host])
    victim = sorted(dirs["mail2"].iterdir())[10]
    lines = victim.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[4])
    record["sender"] = "someone-else@quangninh.test"
    lines[4] = json.dumps(record, ensure_ascii=False) + "\n"
    victim.write_text("".join(lines), encoding="utf-8")
    return dirs, victim.name, 5


def test_a_tampered_trail_names_its_first_bad_line(fleet: Fleet, tmp_path: Path) -> None:
    dirs, bad_file, bad_line = _tampered(fleet, tmp_path)
    document = build_document(_trails(fleet, dirs), SINCE, UNTIL)
    rows = {h["host"]: h for h in document["hosts"]}
    assert rows["mail2"]["ok"] is False
    assert (rows["mail2"]["bad_file"], rows["mail2"]["bad_line"]) == (bad_file, bad_line)
    assert "edited" in rows["mail2"]["reason"]
    assert rows["mail1"]["ok"] and rows["mail3"]["ok"]
    html = render.render_html(document)
    assert 'id="broken-hosts"' in html and "<b>mail2</b>" in html
    assert f'{bad_file}:<span class="bad-line">5</span>' in html


def test_cli_exit_codes_and_outputs(fleet: Fleet, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["report", "compliance", "--since", "2026-11-01", "--until", "2026-12-01"]
    trails = [arg for host, path in fleet.dirs.items() for arg in ("--trail", f"{host}={path}")]
    ok = runner.invoke(app, [*base, *trails, "--format", "json", "-o", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    document = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert document["totals"]["events"] == sum(1 for e in fleet.in_period() if e["findings"])
    assert "no inventory or --ldap-url" in document["directory"]["reason"]
    dirs, bad_file, _ = _tampered(fleet, tmp_path / "t")
    trails = [arg for host, path in dirs.items() for arg in ("--trail", f"{host}={path}")]
    broken = runner.invoke(app, [*base, *trails, "--trail", f"gone={tmp_path / 'missing'}", "-o", str(tmp_path)])
    assert broken.exit_code == 1
    assert f"audit chain of mail2 at {bad_file}:5" in broken.output
    assert "audit chain of gone" in broken.output and "does not exist" in broken.output
    page = (tmp_path / "compliance-2026-11-01_2026-12-01.html").read_text(encoding="utf-8")
    assert "KHÔNG THU THẬP ĐƯỢC" in page and "BỊ HỎNG" in page  # Vietnamese by default
    english = runner.invoke(app, [*base, *trails[:2], "--lang", "en", "--agency", "UBND"])
    assert english.exit_code == 0
    assert '<html lang="en">' in english.stdout and "Official mail compliance report" in english.stdout
    assert "Agency only: <b>UBND</b>" in english.stdout
    neither = runner.invoke(app, base)
    assert neither.exit_code == 2 and "--trail" in neither.output


def _csv_figures(text: str) -> dict[tuple[str, ...], str]:
    return {(r["section"], r["host"], r["agency"], r["clause"], r["week"], r["action"], r["address"], r["metric"]):
            r["value"] for r in csv.DictReader(io.StringIO(text))}


def test_directory_view_per_100_accounts_and_hygiene(fleet: Fleet) -> None:
    document = build_document(_trails(fleet), SINCE, UNTIL, directory=directory_view())
    expected = fleet.expected()["per_agency"]
    rows = {row["agency"]: row for row in document["agencies"]}
    assert rows["SNV"]["events"] == 0 and rows["SNV"]["per_100_accounts"] == 0.0
    for code, accounts in (("STTTT", 40), ("SYT", 120), ("UBND", 300)):
        assert rows[code]["accounts"] == accounts
        assert rows[code]["per_100_accounts"] == round(100 * expected[code] / accounts, 2)
    assert [row["agency"] for row in document["agencies"]] == ["STTTT", "SYT", "UBND", "SNV"]
    hygiene = {row["agency"]: row for row in document["hygiene"]}
    assert (hygiene["SYT"]["accounts"], hygiene["SYT"]["active"], hygiene["SYT"]["disabled"]) == (120, 118, 2)
    # user0 of every agency registers (inbound) and is disabled: it still receives mail.
    to_user0 = [e for e in fleet.in_period() if e["direction"] == "inbound" and e["agency"] == "SYT"
                and e["recipients"][0] in ("user0@syt.quangninh.test", "user5@syt.quangninh.test")]
    assert hygiene["SYT"]["messages_to_disabled"] == len(to_user0) > 0
    assert hygiene["SYT"]["disabled_still_receiving"] == len({e["recipients"][0] for e in to_user0})
    assert document["directory"]["missing_hygiene"] == ["never_logged_in", "over_90_percent_quota"]


def test_csv_and_json_give_the_same_figures(fleet: Fleet) -> None:
    document = build_document(_trails(fleet), SINCE, UNTIL, directory=directory_view())
    again = json.loads(render.render_json(document))
    figures = _csv_figures(render.render_csv(document))
    for clause in CLAUSES:
        for week, actions in again["clauses"][clause].items():
            for action, count in actions.items():
                assert figures[("weekly", "", "", clause, week, action, "", "events")] == str(count)
    for row in again["agencies"]:
        assert figures[("agency", "", row["agency"], "", "", "", "", "events")] == str(row["events"])
        assert figures[("agency", "", row["agency"], "", "", "", "", "per_100_accounts")] == str(
            row["per_100_accounts"])
        for clause, count in row["by_clause"].items():
            assert figures[("agency", "", row["agency"], clause, "", "", "", "events")] == str(count)
    for row in again["registrations"]:
        assert figures[("registration", "", row["agency"], "", "", "", row["address"], "registrations")] == str(
            row["count"])
    for row in again["hygiene"]:
        assert figures[("hygiene", "", row["agency"], "", "", "", "", "messages_to_disabled")] == str(
            row["messages_to_disabled"])
    assert figures[("host", "mail1", "", "", "", "", "", "records")] == "1500"
    assert len(figures) == sum(1 for _ in render.csv_rows(again))


def test_csv_cells_never_start_a_formula() -> None:
    document = {"totals": {}, "clauses": {}, "agencies": [], "freemail": [], "hygiene": [], "hosts": [],
                "registrations": [{"agency": "X", "address": "=HYPERLINK(\"x\")@a.test", "count": 2}]}
    row = next(csv.DictReader(io.StringIO(render.render_csv(document))))
    assert row["address"] == "'=HYPERLINK(\"x\")@a.test"


@pytest.mark.parametrize(("month", "today", "period"), [
    ("previous", dt.date(2026, 12, 7), (dt.date(2026, 11, 1), dt.date(2026, 12, 1))),
    ("previous", dt.date(2027, 1, 1), (dt.date(2026, 12, 1), dt.date(2027, 1, 1))),
    ("2026-02", dt.date(2026, 12, 7), (dt.date(2026, 2, 1), dt.date(2026, 3, 1))),
])
def test_month_periods(month: str, today: dt.date, period: tuple[dt.date, dt.date]) -> None:
    assert parse_period(None, None, month, today) == period


def test_bad_periods_are_input_errors() -> None:
    for args in (("2026-12-01", "2026-11-01", None), ("2026-11-01", None, None), ("x", "2026-11-01", None),
                 (None, None, "2026-13"), ("2026-11-01", "2026-12-01", "previous")):
        with pytest.raises(InputError):
            parse_period(*args)


def test_records_of_the_wrong_shape_are_counted_as_malformed_never_half(tmp_path: Path) -> None:
    good = audit_trails.decision_event(("classified-marking", "1.3(1)", "reject", "outbound"),
                                       audit_trails.DEFAULT_AGENCIES[0], "user1@stttt.quangninh.test",
                                       "x@example.org", dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC))
    odd = [{**good, "time": 12}, {**good, "time": "2026-11-1z"}, {**good, "agencies": "STTTT"},
           {**good, "findings": "x"}, {**good, "findings": [["rule"]]}, {**good, "recipients": "a@b"},
           {**good, "findings": [{"rule": "r", "clause": "1.1", "action": ["reject"]}]}]
    audit_trails.write_chain(tmp_path / "trail", [good, *odd, good])
    document = build_document([collect.parse_trail(f"mail1={tmp_path / 'trail'}")], SINCE, UNTIL)
    assert document["hosts"][0]["ok"] and document["hosts"][0]["records"] == 9  # the chain is intact
    assert document["totals"] == {"records_in_period": 2, "events": 2, "malformed": 7, "records_read": 9}
    assert document["clauses"]["1.3(1)"]["2026-11-02"]["reject"] == 2
    assert ("totals", "", "", "", "", "", "", "malformed") in _csv_figures(render.render_csv(document))
    assert 'id="malformed">7<' in render.render_html(document)


def test_a_report_that_cannot_be_mailed_is_still_written(fleet: Fleet, tmp_path: Path) -> None:
    base = ["report", "compliance", "--month", "2026-11", "--trail", f"mail1={fleet.dirs['mail1']}", "-o",
            str(tmp_path)]
    runner = CliRunner()
    refused = runner.invoke(app, [*base, "--mail-to", "head@syt.quangninh.test", "--smtp", "127.0.0.1:9"])
    assert refused.exit_code == 1
    assert "mailing the report through 127.0.0.1:9" in refused.output
    assert (tmp_path / "compliance-2026-11-01_2026-12-01.html").stat().st_size > 10_000
    injected = runner.invoke(app, [*base, "--mail-to", "head@syt.quangninh.test\r\nBcc: x@evil.test"])
    assert injected.exit_code == 2 and "not a plain mail address" in injected.output
