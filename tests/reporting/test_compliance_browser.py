"""The compliance report's HTML in a real browser (headless Chromium over the DevTools pipe).

The page must render without console errors, make no request beyond its own file, hold
exactly the bars its figures call for, and show hostile trail values as text.
A screenshot is kept in ``build/test-artefacts/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pymupdf
from fleet_data import SINCE, UNTIL, Fleet, directory_view

from qnprov import paths
from qnprov.reporting import collect, render
from qnprov.reporting.compliance import build_document
from qnprov.reporting.figures import CLAUSES
from qnprov_testing import audit_trails
from qnprov_testing.browser import open_page

ARTEFACTS = paths.PROJECT_ROOT / "build" / "test-artefacts"
CHARTS_JS = """[...document.querySelectorAll('svg.week-chart')].map(svg => ({
  clause: svg.dataset.clause,
  bars: [...svg.querySelectorAll('g.bar')].map(g => ({week: g.dataset.week, total: +g.dataset.total,
    segments: [...g.querySelectorAll('rect.seg')].map(r => [r.dataset.action, +r.dataset.count,
      r.getBoundingClientRect().height])}))}))"""
RANKING_JS = """[...document.querySelectorAll('svg.ranking-chart g.rank')].map(g => [g.dataset.agency,
  +g.dataset.value, g.querySelector('rect').getBoundingClientRect().width])"""
ACTIVE_JS = "document.querySelectorAll('script, img, iframe, object, embed, link, [onerror], [onload]').length"


def _keep(name: str, png: bytes) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    path.write_bytes(png)
    return path


def test_report_renders_its_figures_as_bars_offline(fleet: Fleet, tmp_path: Path) -> None:
    trails = [collect.parse_trail(f"{host}={path}") for host, path in fleet.dirs.items()]
    document = build_document(trails, SINCE, UNTIL, directory=directory_view())
    html = render.render_html(document)
    assert "://" not in html and "url(" not in html  # no URL at all: nothing to fetch, even when printed
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    run = open_page(page, {"charts": CHARTS_JS, "ranking": RANKING_JS, "active": ACTIVE_JS,
                           "lang": "document.documentElement.lang",
                           "registrations": "document.querySelectorAll('tr.registration-row').length"})
    assert run.console_errors == []
    assert run.requests == [page.resolve().as_uri()]
    assert run.values["active"] == 0 and run.values["lang"] == "vi"
    charts = run.values["charts"]
    assert [c["clause"] for c in charts] == list(CLAUSES)
    for chart in charts:
        cells = document["clauses"][chart["clause"]]
        assert len(chart["bars"]) == len(document["weeks"]) == 6
        for bar in chart["bars"]:
            expected = [(a, n) for a, n in cells[bar["week"]].items() if n]
            assert [(a, n) for a, n, _ in bar["segments"]] == expected
            assert bar["total"] == sum(n for _, n in expected)
            assert all(height > 0 for _, _, height in bar["segments"])  # drawn, not just present
    assert sum(len(b["segments"]) for c in charts for b in c["bars"]) == sum(
        1 for weeks in document["clauses"].values() for actions in weeks.values() for n in actions.values() if n)
    ranked = run.values["ranking"]
    assert [(a, v) for a, v, _ in ranked] == [(r["agency"], r["per_100_accounts"]) for r in document["agencies"]]
    widths = [w for _, _, w in ranked]
    assert widths == sorted(widths, reverse=True) and widths[-1] == 0  # SNV: no events
    assert run.values["registrations"] == len(document["registrations"]) == 9
    shot = _keep("compliance-report.png", run.screenshot)
    pixmap = pymupdf.Pixmap(str(shot))
    assert 1100 < pixmap.width <= 1200 and pixmap.height > 2400  # the whole page, beyond the viewport


def test_hostile_trail_values_are_text_not_markup(tmp_path: Path) -> None:
    hostile_sender = '"<script>console.error(1)</script>"@evil.test'
    hostile_rcpt = 'x<img src=x onerror=console.error(2)>@quangninh.test'
    hostile_agency = '<svg onload=console.error(3)>'
    when = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)
    events = []
    for hour in range(2):
        event = audit_trails.decision_event(("service-registration", "1.3(3)", "tag", "inbound"),
                                            audit_trails.Agency(hostile_agency, "x", 1), hostile_rcpt,
                                            hostile_sender, when + dt.timedelta(hours=hour))
        event["findings"][0]["evidence"] = "</td></tr></table><script>console.error(4)</script>"
        events.append(event)
    audit_trails.write_chain(tmp_path / "trail", events)
    document = build_document([collect.parse_trail(f"<b>host</b>={tmp_path / 'trail'}")], SINCE, UNTIL)
    assert document["registrations"][0]["address"] == hostile_rcpt.lower()
    html = render.render_html(document, "en")
    page = tmp_path / "hostile.html"
    page.write_text(html, encoding="utf-8")
    run = open_page(page, {"active": ACTIVE_JS, "text": "document.body.innerText",
                           "bold": "document.querySelectorAll('td b, td svg').length"})
    assert run.console_errors == []
    assert run.requests == [page.resolve().as_uri()]
    assert run.values["active"] == 0 and run.values["bold"] == 0
    assert hostile_rcpt.lower() in run.values["text"] and hostile_agency in run.values["text"]
    assert "<b>host</b>" in run.values["text"]
    _keep("compliance-hostile.png", run.screenshot)


def test_the_harness_sees_console_errors_and_requests(tmp_path: Path) -> None:
    # Without this, "no errors, no requests" above could be a harness that sees nothing.
    page = tmp_path / "noisy.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><script>console.error("boom");'
                    "missing();</script></body></html>", encoding="utf-8")
    run = open_page(page, {"two": "1 + 1"})
    assert run.values == {"two": 2}
    assert "boom" in run.console_errors and any("Uncaught" in e for e in run.console_errors)
    assert run.requests == [page.resolve().as_uri(), "http://127.0.0.1:9/x.png"]
    assert json.loads(json.dumps(run.console_errors))  # plain strings
