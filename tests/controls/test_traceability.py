"""Traceability: every clause listed; a clause nothing tests is a gap, never green."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from controls_data import outcome

from qnprov.controls import traceability
from qnprov.controls.catalogue import CLAUSE_IDS, Catalogue, load_catalogue
from qnprov.controls.results import aggregate
from qnprov.controls.traceability import RuleRef
from qnprov.controls.waivers import WaiverSet

TEXTS = {clause: f"text of {clause}" for clause in CLAUSE_IDS}
RULES = [RuleRef("classified-marking", "1.3(1)", "no classified documents", "reject", True, "bundle.yaml"),
         RuleRef("registration", "1.3(3)", "no service registration", "tag", True, "bundle.yaml"),
         RuleRef("old-rule", "1.2", "switched off", "log", False, "bundle.yaml")]


def test_gap_not_verified_and_verified(small_catalogue: Catalogue) -> None:
    rule_tests = {"classified-marking": ["tests/policy/test_x.py::test_marking"], "registration": [], "old-rule": []}
    no_results = traceability.build_matrix(small_catalogue, TEXTS, RULES, rule_tests, None)
    by_clause = {t.clause: t for t in no_results}
    assert [t.clause for t in no_results] == list(CLAUSE_IDS)
    assert by_clause["3"].status == "gap" and by_clause["1.3(3)"].status == "gap"
    assert "rules without a test: registration" in by_clause["1.3(3)"].note
    assert by_clause["1.3(1)"].status == "not-verified"
    assert by_clause["2"].status == "not-verified"
    assert "disabled rules: old-rule" in by_clause["1.2"].note

    report = aggregate(small_catalogue, {"mail1": [
        outcome("test_tiny.py::test_passes", ["QN-PFX-01"], "pass"),
        outcome("test_tiny.py::test_fails", ["QN-PFX-02"], "fail", "AssertionError: x"),
        outcome("test_tiny.py::test_passes_too", ["QN-PFX-02"], "pass"),
    ]}, WaiverSet(), today=dt.date(2026, 11, 29), scanners_ran=True)
    verified = {t.clause: t for t in traceability.build_matrix(small_catalogue, TEXTS, RULES, rule_tests, report)}
    assert verified["1.1"].status == "fail"  # QN-PFX-02 serves 1.1 and failed
    assert verified["2"].status == "error"   # QN-DOV-01/02 had no results
    assert verified["3"].status == "gap"
    assert any(s.startswith("roles/postfix/defaults/main.yml: postfix_example") for s in verified["1.1"].settings)
    assert "qnprov/controls/suite/test_tiny.py::test_fails" in verified["1.1"].tests


def test_real_bundle_and_catalogue_trace_every_clause() -> None:
    texts, rules, bundle = traceability.load_rules()
    assert "decision" in bundle
    root = Path(__file__).resolve().parents[1]
    rule_tests = traceability.find_rule_tests([r.id for r in rules], root)
    matrix = traceability.build_matrix(load_catalogue(), texts, rules, rule_tests, None)
    assert [t.clause for t in matrix] == list(CLAUSE_IDS)
    assert all(t.text for t in matrix)
    # Nothing is green without a verify run.
    assert {t.status for t in matrix} <= {"gap", "not-verified"}
    assert matrix[0].rules and matrix[0].controls
    html = traceability.render_html(matrix, bundle=bundle, verify_at=None)
    assert html.count("<tr>") == len(CLAUSE_IDS) + 1


def test_rule_tests_are_found_by_literal(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_rules.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('rule', ['classified-marking'])\n"
        "def test_a(rule):\n    assert rule\n\n"
        "def test_b():\n    assert 'registration' == 'registration'\n\ndef helper():\n    return 'old-rule'\n")
    found = traceability.find_rule_tests(["classified-marking", "registration", "old-rule"], tests)
    assert found == {"classified-marking": ["tests/test_rules.py::test_a"],
                     "registration": ["tests/test_rules.py::test_b"], "old-rule": []}
