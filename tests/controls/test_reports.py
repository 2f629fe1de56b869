"""Reports: JUnit XML structure, and the HTML page rendered by a real headless Chromium."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pymupdf
from controls_data import outcome

from qnprov.controls import reports
from qnprov.controls.catalogue import Catalogue, load_catalogue
from qnprov.controls.results import VerifyReport, aggregate
from qnprov.controls.waivers import parse_waivers


def _report(catalogue: Catalogue) -> VerifyReport:
    """A realistic mixed report over the real catalogue: most pass, some fail, one waived, one error."""
    outcomes = []
    failing = {"QN-PFX-19": "AssertionError: smtp_tls_security_level='may', expected dane",
               "QN-OS-05": "AssertionError: firewall accepts TCP ports beyond [22, 25, 465, 587, 993]: [143, 636]"}
    for control in catalogue.controls:
        for test in control.tests:
            if control.id in failing:
                outcomes.append(outcome(test, [control.id], "fail", failing[control.id]))
            elif control.id == "QN-RSP-03":
                outcomes.append(outcome(test, [control.id], "error", "ProbeError: rspamd is not installed"))
            elif control.id == "QN-OS-09":
                outcomes.append(outcome(test, [control.id], "fail", "AssertionError: Lynis hardening index 71 < 85",
                                        properties={"lynis_hardening_index": 71}))
            elif control.id == "QN-TLS-06":
                outcomes.append(outcome(test, [control.id], "pass", properties={"testssl": {
                    "submissions": {"address": "127.0.0.1:10465", "low": 0, "medium": 0, "high": 0, "critical": 0,
                                    "scan_problems": 0},
                    "smtp": {"address": "127.0.0.1:10025", "low": 2, "medium": 1, "high": 0, "critical": 0,
                             "scan_problems": 0}}}))
            else:
                outcomes.append(outcome(test, [control.id], "pass"))
    waivers = parse_waivers({"waivers": [{"id": "QN-OS-09", "reason": "containers cannot pass Lynis kernel tests",
                                          "expires": "2027-01-31"}]}, catalogue)
    report = aggregate(catalogue, {"mail1": outcomes}, waivers, today=dt.date(2026, 11, 29), scanners_ran=True,
                       inventory="inventories/lab", generated_at="2026-11-29T21:00:00+00:00")
    return report.model_copy(update={"durations": {"mail1": 41.5}})


def test_junit_xml_has_one_case_per_control_and_host() -> None:
    catalogue = load_catalogue()
    report = _report(catalogue)
    root = ET.fromstring(reports.render_junit(report))  # noqa: S314 - our own output
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "qnprov-controls.mail1"
    cases = suite.findall("testcase")
    assert len(cases) == len(catalogue.controls)
    assert suite.get("failures") == "2" and suite.get("errors") == "1" and suite.get("skipped") == "1"
    failed = {c.get("name", "").split()[0] for c in cases if c.find("failure") is not None}
    assert failed == {"QN-PFX-19", "QN-OS-05"}
    errored = next(c for c in cases if c.find("error") is not None)
    assert "rspamd is not installed" in (errored.find("error").text or "")  # type: ignore[union-attr]


def _nonblank_fraction(png: Path) -> tuple[float, int]:
    """Fraction of non-white pixels and the number of distinct colours (sampled)."""
    pixmap = pymupdf.Pixmap(str(png))
    samples = pixmap.samples
    step = pixmap.n * 7
    colours = set()
    dark = 0
    total = 0
    for index in range(0, len(samples) - pixmap.n, step):
        pixel = tuple(samples[index:index + 3])
        colours.add(pixel)
        total += 1
        if sum(pixel) < 720:
            dark += 1
    return dark / total, len(colours)


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    # scripts/bootstrap.sh installs chromium; without it this check fails, never skips.
    assert shutil.which("chromium"), "Debian package chromium is not installed (run make bootstrap)"
    catalogue = load_catalogue()
    html = reports.render_html(_report(catalogue), catalogue)
    assert "http://" not in html.split("<body>", 1)[1].replace("http://mail.quangninh", "")
    assert "<svg" in html and "QN-PFX-19" in html and "expected dane" in html
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    png = tmp_path / "report.png"
    profile = tmp_path / "profile"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1200,2400", f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), proc.stderr[-2000:]
    keep = os.environ.get("QNPROV_KEEP_SCREENSHOT")
    if keep:  # lets a human look at what Chromium rendered
        shutil.copy(png, keep)
    fraction, colours = _nonblank_fraction(png)
    assert fraction > 0.02, f"screenshot is nearly blank ({fraction:.3%} non-white)"
    assert colours > 8, "screenshot has too few colours to hold text and charts"
