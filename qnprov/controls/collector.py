"""pytest plugin that records each suite test's outcome with its control IDs.

Loaded by verify with ``-p qnprov.controls.collector``. ``--qnprov-results F``
writes one JSON record per test; ``--qnprov-collect F`` (with ``--collect-only``)
writes the collected tests and their markers, which the catalogue-integrity test
compares with the catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

#: Evidence kept per test (characters); enough for an auditor, bounded for the report.
MAX_EVIDENCE = 4000


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qnprov")
    group.addoption("--qnprov-results", default=None, help="write per-test outcomes as JSON here")
    group.addoption("--qnprov-collect", default=None, help="write the collected tests and their controls here")


def test_key(nodeid: str) -> str:
    """``dir/test_x.py::test_y[param]`` -> ``test_x.py::test_y`` (the catalogue's form)."""
    path, _, name = nodeid.partition("::")
    return f"{path.rsplit('/', 1)[-1]}::{name.split('[', 1)[0]}"


def item_controls(item: pytest.Item) -> list[str]:
    return [str(arg) for marker in item.iter_markers("control") for arg in marker.args]


class Recorder:
    def __init__(self, results_path: str | None, collect_path: str | None) -> None:
        self.results_path = results_path
        self.collect_path = collect_path
        self.records: dict[str, dict[str, Any]] = {}
        self.items: dict[str, pytest.Item] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.items = {item.nodeid: item for item in items}
        if self.collect_path:
            collected = [{"nodeid": item.nodeid, "test": test_key(item.nodeid), "controls": item_controls(item),
                          "scanner": item.get_closest_marker("scanner") is not None} for item in items]
            Path(self.collect_path).write_text(json.dumps(collected, indent=1), encoding="utf-8")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        """Runs where the test runs (an xdist worker, or this process): judge the phase and
        attach the verdict to the report, which xdist carries back to the controller."""
        outcome = yield
        report = outcome.get_result()
        report.user_properties.append(("_qnprov_controls", item_controls(item)))
        if not (report.failed or report.skipped):
            return
        probe_error = call.excinfo is not None and type(call.excinfo.value).__name__ == "ProbeError"
        if report.skipped:
            verdict = "error"  # the suite never skips: an unrun check is unproven
            evidence = f"skipped: {report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr}"
        elif call.when != "call" or probe_error:
            verdict, evidence = "error", _short(call, report)
        else:
            verdict, evidence = "fail", _short(call, report)
        report.user_properties.append(("_qnprov_verdict", verdict))
        report.user_properties.append(("_qnprov_evidence", (f"[{call.when}] " + evidence)[:MAX_EVIDENCE]))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Runs in the controller: fold each phase's report into the test's record."""
        props = dict(report.user_properties)
        record = self.records.setdefault(report.nodeid, {
            "nodeid": report.nodeid, "test": test_key(report.nodeid), "controls": props.get("_qnprov_controls", []),
            "outcome": "pass", "evidence": "", "properties": {}, "duration": 0.0,
        })
        record["duration"] += float(report.duration)
        verdict = props.get("_qnprov_verdict")
        if verdict and (record["outcome"] == "pass" or verdict == "error"):
            record["outcome"] = verdict
            record["evidence"] = props.get("_qnprov_evidence", "")
        if report.when == "teardown":
            record["properties"] = {k: v for k, v in report.user_properties if not str(k).startswith("_qnprov_")}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.results_path and not hasattr(session.config, "workerinput"):
            Path(self.results_path).write_text(json.dumps(list(self.records.values()), indent=1, default=str),
                                               encoding="utf-8")


def _short(call: pytest.CallInfo[None], report: pytest.TestReport) -> str:
    if call.excinfo is not None:
        message = str(call.excinfo.value).strip()
        kind = type(call.excinfo.value).__name__
        return f"{kind}: {message}" if message else f"{kind}: {report.longreprtext[-1500:]}"
    return report.longreprtext[-1500:]


def pytest_configure(config: pytest.Config) -> None:
    results = config.getoption("--qnprov-results")
    collect = config.getoption("--qnprov-collect")
    if results or collect:
        config.pluginmanager.register(Recorder(results, collect), "qnprov-recorder")
