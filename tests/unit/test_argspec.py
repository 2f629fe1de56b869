"""Inventory variables are checked against role argument specs before a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qnprov import argspec
from qnprov.errors import ConfigError

SPEC = {
    "demo_mode": {"type": "str", "choices": ["may", "encrypt"], "default": "may", "description": "x"},
    "demo_port": {"type": "int", "default": 25, "description": "x"},
    "demo_domains": {"type": "list", "elements": "str", "default": [], "description": "x"},
}


def _project(tmp_path: Path, group_vars: dict) -> tuple[Path, Path]:
    role = tmp_path / "roles" / "demo" / "meta"
    role.mkdir(parents=True)
    (role / "argument_specs.yml").write_text(yaml.safe_dump({"argument_specs": {"main": {"options": SPEC}}}))
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"h1": {"ansible_connection": "local"}}}}))
    (inv / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(group_vars))
    playbook = tmp_path / "site.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "all", "roles": ["demo"]}]))
    return inv, playbook


def test_valid_inventory_has_no_problems(tmp_path):
    inv, playbook = _project(tmp_path, {"demo_mode": "encrypt", "demo_port": 587, "demo_domains": ["a.test"]})
    assert argspec.validate_inventory(inv, playbook, roles_dir=tmp_path / "roles") == []


def test_wrong_choice_is_one_clear_line(tmp_path):
    inv, playbook = _project(tmp_path, {"demo_mode": "maybe"})
    with pytest.raises(ConfigError) as err:
        argspec.require_valid_inventory(inv, playbook, roles_dir=tmp_path / "roles")
    message = str(err.value)
    assert "\n" not in message
    assert "host h1" in message and "demo_mode" in message and "maybe" in message


def test_wrong_type_is_reported(tmp_path):
    inv, playbook = _project(tmp_path, {"demo_port": "twenty-five"})
    problems = argspec.validate_inventory(inv, playbook, roles_dir=tmp_path / "roles")
    assert [p.variable for p in problems] == ["demo_port"]


def test_unknown_prefixed_variable_suggests_the_right_name(tmp_path):
    inv, playbook = _project(tmp_path, {"demo_prot": 25})
    problems = argspec.validate_inventory(inv, playbook, roles_dir=tmp_path / "roles")
    assert len(problems) == 1
    assert "did you mean demo_port" in problems[0].message


def test_templated_values_are_left_to_ansible(tmp_path):
    inv, playbook = _project(tmp_path, {"demo_port": "{{ 20 + 5 }}", "demo_mode": "{{ lookup('env', 'X') }}"})
    assert argspec.validate_inventory(inv, playbook, roles_dir=tmp_path / "roles") == []


def test_the_lab_inventory_passes_the_real_role_specs():
    from qnprov import paths

    assert argspec.validate_inventory(paths.INVENTORIES_DIR / "lab") == []


def test_the_example_production_inventory_passes_the_real_role_specs():
    from qnprov import paths

    assert argspec.validate_inventory(paths.INVENTORIES_DIR / "example-production") == []


def test_the_lab_ha_inventory_passes_the_real_role_specs():
    """lab-ha switches on replication and stores: every variable it sets is a real
    role option (sub-options such as an account's mail_host are checked by Ansible's
    own argument-spec validation when the role runs)."""
    from qnprov import paths

    assert argspec.validate_inventory(paths.INVENTORIES_DIR / "lab-ha") == []
