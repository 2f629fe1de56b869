"""Waivers parsing and verify's aggregation of test outcomes into control results."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from controls_data import outcome

from qnprov.controls.catalogue import Catalogue, load_catalogue
from qnprov.controls.results import TestOutcome, aggregate
from qnprov.controls.waivers import WaiverSet, load_waivers, parse_waivers
from qnprov.errors import ConfigError

TODAY = dt.date(2026, 11, 29)


def _outcomes() -> dict[str, list[TestOutcome]]:
    return {"mail1": [
        outcome("test_tiny.py::test_passes", ["QN-PFX-01"], "pass"),
        outcome("test_tiny.py::test_fails", ["QN-PFX-02"], "fail", "AssertionError: relay open"),
        outcome("test_tiny.py::test_passes_too", ["QN-PFX-02"], "pass"),
        outcome("test_tiny.py::test_probe_error", ["QN-DOV-01"], "error", "ProbeError: no endpoint"),
        outcome("test_scanners.py::test_lynis_hardening_index", ["QN-OS-09"], "pass",
                properties={"lynis_hardening_index": 88}),
    ]}


def test_missing_reason_is_an_error(small_catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError, match="no reason"):
        parse_waivers({"waivers": [{"id": "QN-PFX-01", "expires": "2027-01-01"}]}, small_catalogue)
    with pytest.raises(ConfigError, match="no reason"):
        parse_waivers({"waivers": [{"id": "QN-PFX-01", "reason": "  ", "expires": "2027-01-01"}]}, small_catalogue)


def test_missing_expiry_and_unknown_control_are_errors(small_catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError, match="expires"):
        parse_waivers({"waivers": [{"id": "QN-PFX-01", "reason": "accepted risk, see ticket 12"}]}, small_catalogue)
    with pytest.raises(ConfigError, match="unknown control"):
        parse_waivers({"waivers": [{"id": "QN-PFX-99", "reason": "accepted risk, see ticket 12",
                                    "expires": "2027-01-01"}]}, small_catalogue)
    with pytest.raises(ConfigError, match="mapping"):
        parse_waivers(["QN-PFX-01"], small_catalogue)


def test_waiver_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yml"
    path.write_text("waivers:\n  - id: QN-OS-09\n    reason: containers cannot reach Lynis' kernel checks\n"
                    "    expires: 2027-03-31\n    hosts: [mail1]\n")
    waivers = load_waivers(path, load_catalogue())
    active, expired = waivers.for_control("QN-OS-09", "mail1", TODAY)
    assert active is not None and expired is None
    assert waivers.for_control("QN-OS-09", "mail2", TODAY) == (None, None)
    path.write_text("waivers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_waivers(path, load_catalogue())


def test_aggregation_takes_the_worst_outcome(small_catalogue: Catalogue) -> None:
    report = aggregate(small_catalogue, _outcomes(), WaiverSet(), today=TODAY, scanners_ran=True,
                       scanner_tests=frozenset({"test_scanners.py::test_lynis_hardening_index"}))
    status = {c.id: c.status for c in report.controls}
    assert status == {"QN-PFX-01": "pass", "QN-PFX-02": "fail", "QN-DOV-01": "error", "QN-DOV-02": "error",
                      "QN-OS-09": "pass"}
    by_id = {c.id: c for c in report.controls}
    assert "relay open" in by_id["QN-PFX-02"].detail
    assert "no test checked this control" in by_id["QN-DOV-02"].detail
    assert report.summary == {"pass": 2, "fail": 1, "waived": 0, "error": 2}
    assert not report.ok
    assert report.metrics["lynis_hardening_index"] == 88


def test_active_waiver_waives_and_expired_waiver_does_not(small_catalogue: Catalogue) -> None:
    waivers = parse_waivers({"waivers": [
        {"id": "QN-PFX-02", "reason": "relay test host pending re-IP, ticket 7", "expires": "2026-12-31"},
        {"id": "QN-DOV-01", "reason": "endpoint not published in this site yet", "expires": "2026-11-01"},
    ]}, small_catalogue)
    report = aggregate(small_catalogue, _outcomes(), waivers, today=TODAY, scanners_ran=True)
    by_id = {c.id: c for c in report.controls}
    assert by_id["QN-PFX-02"].status == "waived"
    assert "underlying fail" in by_id["QN-PFX-02"].detail and "ticket 7" in by_id["QN-PFX-02"].detail
    assert by_id["QN-DOV-01"].status == "error"
    assert "waiver expired 2026-11-01" in by_id["QN-DOV-01"].detail


def test_no_scanners_leaves_scanner_only_controls_out(small_catalogue: Catalogue) -> None:
    outcomes = {"mail1": [o for o in _outcomes()["mail1"] if not o.test.startswith("test_scanners")]}
    report = aggregate(small_catalogue, outcomes, WaiverSet(), today=TODAY, scanners_ran=False,
                       scanner_tests=frozenset({"test_scanners.py::test_lynis_hardening_index"}))
    assert "QN-OS-09" not in {c.id for c in report.controls}
    assert report.metrics == {"lynis_hardening_index": None, "testssl": {"skipped": "--no-scanners"}}


def test_a_control_whose_other_test_did_not_run_is_an_error(small_catalogue: Catalogue) -> None:
    outcomes = {"mail1": [outcome("test_tiny.py::test_passes_too", ["QN-PFX-02"], "pass")]}
    report = aggregate(small_catalogue, outcomes, WaiverSet(), today=TODAY, scanners_ran=True)
    by_id = {c.id: c for c in report.controls}
    assert by_id["QN-PFX-02"].status == "error"
    assert "test_tiny.py::test_fails" in by_id["QN-PFX-02"].detail


def test_multi_host_status_is_the_worst_host(small_catalogue: Catalogue) -> None:
    good = [outcome("test_tiny.py::test_passes", ["QN-PFX-01"], "pass")]
    bad = [outcome("test_tiny.py::test_passes", ["QN-PFX-01"], "fail", "AssertionError: x")]
    report = aggregate(small_catalogue, {"mx1": good, "mx2": bad}, WaiverSet(), today=TODAY, scanners_ran=True)
    first = report.controls[0]
    assert first.status == "fail" and "mx2: fail" in first.detail and "mx1: pass" in first.detail


def test_public_json_has_exactly_the_contract_keys(small_catalogue: Catalogue) -> None:
    report = aggregate(small_catalogue, _outcomes(), WaiverSet(), today=TODAY, scanners_ran=True)
    doc = json.loads(json.dumps(report.public()))
    assert set(doc) == {"controls", "summary", "metrics"}
    assert all(set(c) == {"id", "title", "clause", "status", "detail"} for c in doc["controls"])
    assert all(c["status"] in {"pass", "fail", "waived", "error"} for c in doc["controls"])
    assert set(doc["summary"]) == {"pass", "fail", "waived", "error"}
    assert sum(doc["summary"].values()) == len(doc["controls"])
    assert set(doc["metrics"]) == {"lynis_hardening_index", "testssl"}


def test_finding_scoped_waiver_accepts_only_named_findings(small_catalogue: Catalogue) -> None:
    catalogue = load_catalogue()
    waivers = parse_waivers({"waivers": [
        {"id": "QN-TLS-06", "findings": ["cert_revocation"], "hosts": ["mail1"],
         "reason": "the lab CA publishes no CRL or OCSP responder", "expires": "2027-03-31"},
        {"id": "QN-TLS-07", "findings": ["BREACH"], "reason": "expired acceptance, kept for history",
         "expires": "2026-01-01"},
    ]}, catalogue)
    assert waivers.accepted_findings("mail1", TODAY) == {
        "QN-TLS-06": {"cert_revocation": "the lab CA publishes no CRL or OCSP responder"}}
    assert waivers.accepted_findings("mx2", TODAY) == {}
    # A finding-scoped waiver never waives the control's status as a whole.
    assert waivers.for_control("QN-TLS-06", "mail1", TODAY) == (None, None)


def test_scanner_filter_and_aggregation_of_accepted_findings() -> None:
    from qnprov.controls import scanners

    result = scanners.TestsslResult("imaps", "127.0.0.1:10993", [
        scanners.TestsslFinding("cert_revocation", "HIGH", "Neither CRL nor OCSP URI provided"),
        scanners.TestsslFinding("cipher_order", "HIGH", "NOT a cipher order configured")])
    counted, waived = scanners.accept_findings({"imaps": result}, {"cert_revocation": "lab CA"})
    assert [f.id for f in counted["imaps"]] == ["cipher_order"]
    assert waived == ["imaps: HIGH cert_revocation (lab CA)"]

    catalogue = load_catalogue()
    passing = outcome("test_scanners.py::test_testssl_no_high_or_critical", ["QN-TLS-06"], "pass",
                      properties={"accepted_findings": ["imaps: HIGH cert_revocation (lab CA)"]})
    report = aggregate(catalogue, {"mail1": [passing]}, WaiverSet(), today=TODAY, scanners_ran=True)
    tls06 = next(c for c in report.controls if c.id == "QN-TLS-06")
    assert tls06.status == "waived" and "cert_revocation" in tls06.detail
