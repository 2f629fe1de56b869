"""Catalogue integrity: valid data, every control tested by a real suite test, every
suite test mapped to a control, every enforcing variable declared by its role."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from qnprov.controls.catalogue import CLAUSE_IDS, CONTROL_FAMILIES, load_catalogue, parse_catalogue
from qnprov.controls.verify import SUITE_DIR
from qnprov.errors import ConfigError

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    """Collect the packaged suite exactly as verify runs it, with the collector plugin."""
    tmp = tmp_path_factory.mktemp("collect")
    (tmp / "pytest.ini").write_text("[pytest]\n")
    out = tmp / "collected.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE_DIR), "-c", str(tmp / "pytest.ini"), "--rootdir", str(SUITE_DIR),
         "--confcutdir", str(SUITE_DIR), "-p", "qnprov.controls.collector", "-p", "no:cacheprovider",
         "--collect-only", "-q", "--qnprov-collect", str(out)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data: list[dict[str, object]] = json.loads(out.read_text())
    return data


def test_catalogue_is_big_enough_and_covers_every_family() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.controls) >= 35
    families = Counter(control.family for control in catalogue.controls)
    assert set(families) == set(CONTROL_FAMILIES)
    assert all(count >= 3 for count in families.values()), families


def test_every_clause_used_is_a_decision_clause() -> None:
    used = {clause for control in load_catalogue().controls for clause in control.clauses}
    assert used <= set(CLAUSE_IDS)
    assert "2" in used and {"1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)"} <= used


def test_every_catalogue_test_exists_in_the_suite(collected: list[dict[str, object]]) -> None:
    suite_tests = {str(item["test"]) for item in collected}
    missing = {test for control in load_catalogue().controls for test in control.tests} - suite_tests
    assert not missing, f"catalogue names tests the suite lacks: {sorted(missing)}"


def test_every_suite_test_maps_to_a_control(collected: list[dict[str, object]]) -> None:
    mapping = load_catalogue().controls_for_test()
    unmapped = sorted({str(item["test"]) for item in collected} - set(mapping))
    assert not unmapped, f"suite tests no control names: {unmapped}"
    unmarked = [item["test"] for item in collected if not item["controls"]]
    assert not unmarked, f"suite tests without @pytest.mark.control: {unmarked}"


def test_suite_markers_agree_with_the_catalogue(collected: list[dict[str, object]]) -> None:
    mapping = load_catalogue().controls_for_test()
    disagree = {str(item["test"]): (item["controls"], mapping.get(str(item["test"])))
                for item in collected
                if sorted(item["controls"]) != sorted(mapping.get(str(item["test"]), []))}  # type: ignore[call-overload]
    assert not disagree, disagree


def test_scanner_tests_are_marked(collected: list[dict[str, object]]) -> None:
    scanners = {str(item["test"]) for item in collected if item["scanner"]}
    assert scanners == {str(item["test"]) for item in collected if str(item["test"]).startswith("test_scanners.py")}
    assert len(scanners) == 3


def test_every_enforcing_variable_is_declared_by_its_role() -> None:
    """Needs the roles: it fails, by design, until they declare the variables."""
    missing = []
    for control in load_catalogue().controls:
        for enforcement in control.enforcement:
            if enforcement.variable is None:
                continue
            defaults = ROLES_DIR / enforcement.role / "defaults" / "main.yml"
            declared = (yaml.safe_load(defaults.read_text()) or {}) if defaults.is_file() else {}
            if enforcement.variable not in declared:
                missing.append(f"{control.id}: {enforcement.role}/{enforcement.variable}")
    assert not missing, f"{len(missing)} enforcing variables not in roles' defaults: {missing}"


def test_every_enforcing_template_carries_its_setting() -> None:
    missing = []
    for control in load_catalogue().controls:
        for enforcement in control.enforcement:
            if enforcement.template is None:
                continue
            path = ROLES_DIR.parent / enforcement.template
            if not (ROLES_DIR / enforcement.role).is_dir() or not path.is_file() \
                    or str(enforcement.setting) not in path.read_text():
                missing.append(f"{control.id}: {enforcement.template} {enforcement.setting!r}")
    assert not missing, f"templates that do not carry the setting: {missing}"


def test_bad_catalogue_data_is_refused() -> None:
    good = yaml.safe_load((SUITE_DIR.parent / "data" / "controls.yaml").read_text())
    duplicate = {**good, "controls": [good["controls"][0], good["controls"][0]]}
    with pytest.raises(ConfigError, match="duplicate control id"):
        parse_catalogue(duplicate)
    bad_clause = {**good, "controls": [{**good["controls"][0], "clauses": ["4"]}]}
    with pytest.raises(ConfigError, match="unknown clause"):
        parse_catalogue(bad_clause)
    bad_id = {**good, "controls": [{**good["controls"][0], "id": "PFX-1"}]}
    with pytest.raises(ConfigError, match="control id"):
        parse_catalogue(bad_id)
    no_tests = {**good, "controls": [{**good["controls"][0], "tests": []}]}
    with pytest.raises(ConfigError):
        parse_catalogue(no_tests)


def test_docs_list_every_control() -> None:
    text = (ROLES_DIR.parent / "docs" / "controls.md").read_text()
    missing = [c.id for c in load_catalogue().controls if f"| {c.id} | {c.title} |" not in text]
    assert not missing, f"docs/controls.md is out of date for {missing}"
