"""The report's document of figures as JSON, CSV or one self-contained HTML page.

All three render the same document (:meth:`qnprov.reporting.figures.Tally.document`).
The HTML page has its charts inline as SVG, its style inline, no script and no URL:
opened offline, printed to PDF, it fetches nothing. Every value from a trail is
escaped by Jinja's autoescape.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import jinja2

from qnprov.reporting import charts
from qnprov.reporting.figures import CLAUSES
from qnprov.reporting.i18n import texts

FORMATS = ("html", "json", "csv")
CSV_COLUMNS = ("section", "host", "agency", "clause", "week", "action", "address", "metric", "value")


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def csv_rows(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per figure, in a long format other tools can pivot."""
    for metric, value in document["totals"].items():
        yield {"section": "totals", "metric": metric, "value": value}
    for clause, weeks in document["clauses"].items():
        for week, actions in weeks.items():
            for action, count in actions.items():
                yield {"section": "weekly", "clause": clause, "week": week, "action": action,
                       "metric": "events", "value": count}
    for row in document["agencies"]:
        for metric in ("accounts", "events", "per_100_accounts"):
            yield {"section": "agency", "agency": row["agency"], "metric": metric, "value": row[metric]}
        for clause, count in row["by_clause"].items():
            yield {"section": "agency", "agency": row["agency"], "clause": clause, "metric": "events", "value": count}
    for row in document["registrations"]:
        yield {"section": "registration", "agency": row["agency"], "address": row["address"],
               "metric": "registrations", "value": row["count"]}
    for row in document["freemail"]:
        for metric in ("outbound_to_freemail", "blocked_forwarding"):
            yield {"section": "freemail", "agency": row["agency"], "metric": metric, "value": row[metric]}
    for row in document.get("rate_limits", []):
        for rule, count in row["refusals"].items():
            yield {"section": "rate_limits", "agency": row["agency"], "metric": rule, "value": count}
        yield {"section": "rate_limits", "agency": row["agency"], "metric": "burst_alerts",
               "value": row["burst_alerts"]}
    for alert in document.get("burst_alerts", []):
        yield {"section": "burst_alert", "agency": alert["agency"], "address": alert["account"],
               "week": alert["time"], "metric": "burst", "value": alert["evidence"]}
    for row in document["hygiene"]:
        for metric in ("accounts", "active", "disabled", "disabled_still_receiving", "messages_to_disabled"):
            yield {"section": "hygiene", "agency": row["agency"], "metric": metric, "value": row[metric]}
    for row in document["hosts"]:
        for metric in ("ok", "records", "bad_line"):
            yield {"section": "host", "host": row["host"], "metric": metric, "value": row[metric]}


def render_csv(document: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(document):
        # A spreadsheet would run a cell that starts with = + - @ as a formula; addresses come from mail.
        writer.writerow({k: "'" + v if isinstance(v, str) and v[:1] in "=+-@" else v for k, v in row.items()})
    return buffer.getvalue()


def render_html(document: dict[str, Any], lang: str = "vi") -> str:
    text = (resources.files("qnprov.reporting") / "data" / "compliance.html.j2").read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    clause_charts = {clause: charts.week_chart(document["weeks"], document["clauses"][clause], document["actions"])
                     for clause in CLAUSES}
    return environment.from_string(text).render(
        doc=document, t=texts(lang), lang=lang, clauses=CLAUSES, clause_charts=clause_charts,
        ranking=charts.ranking_chart(document["agencies"], "per_100_accounts"), colours=charts.ACTION_COLOURS,
        broken=[h for h in document["hosts"] if not h["ok"]],
    )


def render(document: dict[str, Any], fmt: str, lang: str = "vi") -> str:
    if fmt == "json":
        return render_json(document)
    if fmt == "csv":
        return render_csv(document)
    return render_html(document, lang)
