"""verify's runner and aggregation on a real pytest run of a tiny fixture suite."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from qnprov.controls.catalogue import Catalogue
from qnprov.controls.results import aggregate
from qnprov.controls.target import VerifyTarget
from qnprov.controls.verify import run_suite
from qnprov.controls.waivers import WaiverSet

FIXTURE_SUITE = Path(__file__).parent / "fixture_suite"
SCANNER_TESTS = frozenset({"test_scanners.py::test_lynis_hardening_index"})


def _local_target() -> VerifyTarget:
    return VerifyTarget(name="localhost", backend="local://", mail_hostname="mail1.quangninh.test",
                        domain="quangninh.test")


def test_outcomes_of_a_real_run_are_keyed_by_control(small_catalogue: Catalogue) -> None:
    run = run_suite(_local_target(), scanners=True, suite_dir=FIXTURE_SUITE, timeout=120)
    by_test = {o.test: o for o in run.outcomes}
    assert {t: o.outcome for t, o in by_test.items()} == {
        "test_tiny.py::test_passes": "pass",
        "test_tiny.py::test_fails": "fail",
        "test_tiny.py::test_passes_too": "pass",
        "test_tiny.py::test_probe_error": "error",
        "test_tiny.py::test_setup_error": "error",
        "test_scanners.py::test_lynis_hardening_index": "pass",
    }
    assert "fixture file is missing" in by_test["test_tiny.py::test_fails"].evidence
    assert by_test["test_tiny.py::test_probe_error"].evidence.startswith("[call] ProbeError")
    setup_error = by_test["test_tiny.py::test_setup_error"].evidence
    assert "[setup] RuntimeError: fixture could not read host state" in setup_error
    assert by_test["test_tiny.py::test_passes"].properties == {"echo": "qnprov"}
    assert by_test["test_tiny.py::test_fails"].controls == ["QN-PFX-02"]

    report = aggregate(small_catalogue, {"localhost": run.outcomes}, WaiverSet(), today=dt.date(2026, 11, 29),
                       scanners_ran=True, scanner_tests=SCANNER_TESTS)
    assert {c.id: c.status for c in report.controls} == {
        "QN-PFX-01": "pass", "QN-PFX-02": "fail", "QN-DOV-01": "error", "QN-DOV-02": "error", "QN-OS-09": "pass"}
    assert report.metrics["lynis_hardening_index"] == 91
    assert not report.ok


def test_no_scanners_deselects_scanner_tests(small_catalogue: Catalogue) -> None:
    run = run_suite(_local_target(), scanners=False, suite_dir=FIXTURE_SUITE, timeout=120)
    assert "test_scanners.py::test_lynis_hardening_index" not in {o.test for o in run.outcomes}
    report = aggregate(small_catalogue, {"localhost": run.outcomes}, WaiverSet(), today=dt.date(2026, 11, 29),
                       scanners_ran=False, scanner_tests=SCANNER_TESTS)
    assert "QN-OS-09" not in {c.id for c in report.controls}
    assert report.metrics["lynis_hardening_index"] is None
