"""Shared data for the controls tests (catalogue snippets, outcomes)."""

from __future__ import annotations

from typing import Any

from qnprov.controls.catalogue import Catalogue, parse_catalogue
from qnprov.controls.results import TestOutcome


def control(cid: str, tests: list[str], clauses: list[str] | None = None) -> dict[str, Any]:
    return {"id": cid, "title": f"Control {cid}", "clauses": clauses or ["2"],
            "anchors": [{"source": "PFX", "ref": "postconf(5) example"}],
            "enforcement": [{"role": "postfix", "variable": "postfix_example"}], "tests": tests}


def small_catalogue_data() -> Catalogue:
    return parse_catalogue({"schema_version": 1, "controls": [
        control("QN-PFX-01", ["test_tiny.py::test_passes"]),
        control("QN-PFX-02", ["test_tiny.py::test_fails", "test_tiny.py::test_passes_too"], ["1.1", "2"]),
        control("QN-DOV-01", ["test_tiny.py::test_probe_error"]),
        control("QN-DOV-02", ["test_tiny.py::test_setup_error"]),
        control("QN-OS-09", ["test_scanners.py::test_lynis_hardening_index"]),
    ]})


def outcome(test: str, controls: list[str], result: str, evidence: str = "",
            properties: dict[str, Any] | None = None) -> TestOutcome:
    return TestOutcome(nodeid=f"{test}[podman://x]", test=test, controls=controls, outcome=result,  # type: ignore[arg-type]
                       evidence=evidence, properties=properties or {})
