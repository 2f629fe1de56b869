"""Aggregate per-test outcomes into per-control results (pure).

A control's status on a host is the worst of its tests' outcomes (error > fail >
pass); a control none of whose tests ran is an ``error``: unproven is never green.
Across hosts the worst status wins. An active waiver turns fail/error into
``waived`` and keeps what it hides in the detail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from qnprov.controls.catalogue import Catalogue, Control
from qnprov.controls.waivers import WaiverSet

Status = Literal["pass", "fail", "waived", "error"]
Outcome = Literal["pass", "fail", "error"]
_RANK: dict[str, int] = {"pass": 0, "waived": 1, "fail": 2, "error": 3}


class TestOutcome(BaseModel):
    __test__ = False  # a data model, not a pytest test class
    nodeid: str
    test: str
    controls: list[str]
    outcome: Outcome
    evidence: str = ""
    properties: dict[str, Any] = Field(default_factory=dict)
    duration: float = 0.0


class HostResult(BaseModel):
    host: str
    status: Status
    detail: str
    tests: list[TestOutcome]
    waiver_reason: str | None = None


class ControlResult(BaseModel):
    id: str
    title: str
    clause: str
    status: Status
    detail: str
    hosts: list[HostResult]

    def public(self) -> dict[str, Any]:
        """The five keys of verify's --json contract."""
        return {"id": self.id, "title": self.title, "clause": self.clause, "status": self.status,
                "detail": self.detail}


class VerifyReport(BaseModel):
    generated_at: str
    inventory: str
    hosts: list[str]
    scanners: bool
    controls: list[ControlResult]
    metrics: dict[str, Any]
    durations: dict[str, float] = Field(default_factory=dict)

    @property
    def summary(self) -> dict[str, int]:
        counts = {"pass": 0, "fail": 0, "waived": 0, "error": 0}
        for control in self.controls:
            counts[control.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        summary = self.summary
        return summary["fail"] == 0 and summary["error"] == 0

    def public(self) -> dict[str, Any]:
        return {"controls": [c.public() for c in self.controls], "summary": self.summary, "metrics": self.metrics}


def _host_status(control: Control, tests: list[TestOutcome]) -> tuple[Status, str]:
    if not tests:
        return "error", "no test checked this control on this host (suite incomplete or crashed)"
    worst = max(tests, key=lambda t: _RANK[t.outcome])
    status: Status = worst.outcome
    missing = sorted(set(control.tests) - {t.test for t in tests})
    if missing and status == "pass":
        return "error", f"tests did not run: {', '.join(missing)}"
    accepted = [item for t in tests for item in t.properties.get("accepted_findings") or []]
    if status == "pass" and accepted:
        return "waived", f"passes only with accepted findings: {'; '.join(accepted)}"
    if status == "pass":
        return "pass", f"{len(tests)} check(s) passed"
    bad = [t for t in tests if t.outcome != "pass"]
    return status, "; ".join(f"{t.test}: {t.evidence}" for t in bad)


def aggregate(catalogue: Catalogue, outcomes: dict[str, list[TestOutcome]], waivers: WaiverSet, *,
              today: dt.date, scanners_ran: bool, scanner_tests: frozenset[str] = frozenset(),
              inventory: str = "", generated_at: str = "") -> VerifyReport:
    """Build the report from each host's test outcomes.

    ``scanner_tests`` names the suite's scanner tests: when scanners did not run,
    controls checked only by them are left out of the report (not evaluated), and
    tests of theirs are not expected.
    """
    results = []
    for control in catalogue.controls:
        own_tests = set(control.tests)
        if not scanners_ran and own_tests <= scanner_tests:
            continue
        expected = own_tests if scanners_ran else own_tests - scanner_tests
        host_results = []
        for host, host_outcomes in outcomes.items():
            tests = [t for t in host_outcomes if control.id in t.controls]
            checked = control.model_copy(update={"tests": sorted(expected)})
            status, detail = _host_status(checked, tests)
            active, expired = waivers.for_control(control.id, host, today)
            reason = None
            if active is not None and status in ("fail", "error"):
                reason = active.reason
                detail = f"waived until {active.expires}: {active.reason} (underlying {status}: {detail})"
                status = "waived"
            elif expired is not None and status != "pass":
                detail = f"{detail} (waiver expired {expired.expires}, not applied)"
            host_results.append(HostResult(host=host, status=status, detail=detail, tests=tests,
                                           waiver_reason=reason))
        if not host_results:
            status, detail = "error", "no host was verified"
        else:
            status = max((h.status for h in host_results), key=lambda s: _RANK[s])
            if len(host_results) == 1:
                detail = host_results[0].detail
            else:
                detail = " | ".join(f"{h.host}: {h.status}: {h.detail}" for h in host_results)
        results.append(ControlResult(id=control.id, title=control.title, clause=control.clause_text,
                                     status=status, detail=detail, hosts=host_results))
    return VerifyReport(generated_at=generated_at, inventory=inventory, hosts=list(outcomes),
                        scanners=scanners_ran, controls=results, metrics=collect_metrics(outcomes, scanners_ran))


def collect_metrics(outcomes: dict[str, list[TestOutcome]], scanners_ran: bool) -> dict[str, Any]:
    """Lynis index (the lowest across hosts) and testssl counts per host and endpoint."""
    indexes: list[int] = []
    testssl: dict[str, Any] = {}
    for host, host_outcomes in outcomes.items():
        for outcome in host_outcomes:
            index = outcome.properties.get("lynis_hardening_index")
            if isinstance(index, int):
                indexes.append(index)
            scans = outcome.properties.get("testssl")
            if isinstance(scans, dict):
                testssl[host] = scans
    return {
        "lynis_hardening_index": min(indexes) if indexes else None,
        "testssl": testssl if scanners_ran else {"skipped": "--no-scanners"},
    }
