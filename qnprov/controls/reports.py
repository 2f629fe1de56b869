"""Render a verify report as JSON, JUnit XML or a self-contained HTML page (pure)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from importlib import resources
from typing import Any

import jinja2

from qnprov.controls.catalogue import Catalogue
from qnprov.controls.results import VerifyReport

STATUS_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "waived": "#f9a825", "error": "#6a1b9a"}
STATUS_ORDER = ("pass", "fail", "waived", "error")


def render_json(report: VerifyReport) -> str:
    return json.dumps(report.public(), indent=2, ensure_ascii=False)


def render_junit(report: VerifyReport) -> str:
    """One testsuite per host, one testcase per control (classname = host)."""
    suites = ET.Element("testsuites", name="qnprov verify")
    for host in report.hosts:
        cases = [(control, hr) for control in report.controls for hr in control.hosts if hr.host == host]
        suite = ET.SubElement(suites, "testsuite", name=f"qnprov-controls.{host}", tests=str(len(cases)),
                              failures=str(sum(1 for _, hr in cases if hr.status == "fail")),
                              errors=str(sum(1 for _, hr in cases if hr.status == "error")),
                              skipped=str(sum(1 for _, hr in cases if hr.status == "waived")),
                              time=f"{report.durations.get(host, 0.0):.1f}")
        for control, host_result in cases:
            case = ET.SubElement(suite, "testcase", classname=host, name=f"{control.id} {control.title}",
                                 time=f"{sum(t.duration for t in host_result.tests):.2f}")
            if host_result.status == "fail":
                ET.SubElement(case, "failure", message=host_result.detail[:500]).text = host_result.detail
            elif host_result.status == "error":
                ET.SubElement(case, "error", message=host_result.detail[:500]).text = host_result.detail
            elif host_result.status == "waived":
                ET.SubElement(case, "skipped", message=host_result.detail[:500])
            properties = ET.SubElement(case, "properties")
            ET.SubElement(properties, "property", name="clause", value=control.clause)
            ET.SubElement(properties, "property", name="tests",
                          value=" ".join(sorted({t.test for t in host_result.tests})))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def donut_segments(summary: dict[str, int], radius: float = 60.0) -> list[dict[str, Any]]:
    """SVG stroke-dasharray segments for a donut chart of the status counts."""
    total = sum(summary.values()) or 1
    circumference = 2 * math.pi * radius
    offset = 0.0
    segments = []
    for status in STATUS_ORDER:
        length = circumference * summary.get(status, 0) / total
        if length:
            segments.append({"status": status, "colour": STATUS_COLOURS[status], "dash": f"{length:.2f} "
                             f"{circumference - length:.2f}", "offset": f"{-offset:.2f}"})
        offset += length
    return segments


def family_bars(report: VerifyReport, width: float = 420.0) -> list[dict[str, Any]]:
    """Stacked horizontal bars: one per control family, widths proportional to counts."""
    families: dict[str, dict[str, int]] = {}
    for control in report.controls:
        family = control.id.split("-")[1]
        families.setdefault(family, dict.fromkeys(STATUS_ORDER, 0))[control.status] += 1
    biggest = max((sum(c.values()) for c in families.values()), default=1)
    bars = []
    for row, (family, counts) in enumerate(families.items()):
        x = 0.0
        parts = []
        for status in STATUS_ORDER:
            w = width * counts[status] / biggest
            if w:
                parts.append({"x": f"{x:.1f}", "w": f"{w:.1f}", "colour": STATUS_COLOURS[status],
                              "label": f"{counts[status]} {status}"})
            x += w
        bars.append({"family": family, "y": row * 30, "parts": parts, "total": sum(counts.values())})
    return bars


def render_html(report: VerifyReport, catalogue: Catalogue) -> str:
    template_text = (resources.files("qnprov.controls") / "data" / "report.html.j2").read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string(template_text)
    by_id = catalogue.by_id()
    problems = [c for c in report.controls if c.status in ("fail", "error")]
    return template.render(
        report=report, summary=report.summary, colours=STATUS_COLOURS, segments=donut_segments(report.summary),
        bars=family_bars(report), problems=problems, waived=[c for c in report.controls if c.status == "waived"],
        catalogue=by_id, total=len(report.controls), lynis_gate=85,
    )
