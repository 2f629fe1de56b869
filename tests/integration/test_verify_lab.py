"""`qnprov verify` against the running lab: every control holds, with and without the scanners.

The session fixture in conftest.py brings the lab up (or fails loudly). If the lab
container is not running when this module starts, the tests fail: they never skip.
How long verify takes (issue 5: <= 60 s without the scanners, <= 5 min with
testssl.sh and Lynis) is measured by benchmarks/verify_time.py, not asserted here;
the timeouts below only stop a hung run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qnprov import lab, paths

STATUSES = {"pass", "fail", "waived", "error"}
#: Lab-only acceptances (each names one scanner finding and says why); see the file.
LAB_WAIVERS = Path(__file__).with_name("lab-waivers.yml")
pytestmark = pytest.mark.lab


def _require_running_lab() -> None:
    config = lab.load_lab_config()
    down = [h.container for h in config.hosts if lab.container_state(h.container) != "running"]
    if down:
        pytest.fail(f"lab container(s) {down} not running: run `qnprov lab up` first", pytrace=False)


Run = subprocess.CompletedProcess[str]


def _verify(tmp_path: Path, *extra: str, hang_timeout: float) -> tuple[dict[str, Any], float, Run]:
    _require_running_lab()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "qnprov", "verify", "-i", str(lab.default_inventory()), "--json",
         "--junit", str(tmp_path / "verify.xml"), "--html", str(tmp_path / "verify.html"),
         "--results", str(tmp_path / "last-verify.json"), "--waivers", str(LAB_WAIVERS), *extra],
        capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=hang_timeout, check=False)
    elapsed = time.monotonic() - started
    assert proc.stdout.strip(), f"verify printed no JSON (exit {proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(proc.stdout), elapsed, proc


def _check_schema(doc: dict[str, Any]) -> None:
    assert set(doc) == {"controls", "summary", "metrics"}
    assert doc["controls"], "no controls in the report"
    for control in doc["controls"]:
        assert set(control) == {"id", "title", "clause", "status", "detail"}
        assert control["status"] in STATUSES
    assert set(doc["summary"]) == STATUSES
    assert sum(doc["summary"].values()) == len(doc["controls"])
    assert set(doc["metrics"]) == {"lynis_hardening_index", "testssl"}


def _problems(doc: dict[str, Any]) -> list[str]:
    return [f"{c['id']} {c['status']}: {c['detail'][:400]}" for c in doc["controls"]
            if c["status"] in ("fail", "error")]


def test_verify_without_scanners_is_green(tmp_path: Path) -> None:
    doc, elapsed, proc = _verify(tmp_path, "--no-scanners", hang_timeout=600)
    _check_schema(doc)
    print(f"verify --no-scanners: {elapsed:.1f}s, summary {doc['summary']}")
    assert not _problems(doc), "\n".join(_problems(doc))
    assert proc.returncode == 0
    assert (tmp_path / "verify.xml").read_text().startswith("<?xml")


def test_verify_with_scanners_is_green(tmp_path: Path) -> None:
    doc, elapsed, proc = _verify(tmp_path, hang_timeout=1200)
    _check_schema(doc)
    print(f"verify with scanners: {elapsed:.1f}s, summary {doc['summary']}, metrics {doc['metrics']}")
    assert not _problems(doc), "\n".join(_problems(doc))
    assert proc.returncode == 0
    index = doc["metrics"]["lynis_hardening_index"]
    assert isinstance(index, int) and index >= 85, f"Lynis hardening index {index}"
    assert doc["metrics"]["testssl"], "no testssl metrics"
