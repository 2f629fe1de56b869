"""unattended-upgrades' daily timers: on in production, held in the lab (issue 9, item 6)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from qnprov import paths

ROLE = paths.ROLES_DIR / "os_hardening"
VAR = "os_hardening_unattended_upgrades_timers_enabled"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _inventory_vars(name: str) -> dict:
    merged: dict = {}
    inventory = paths.INVENTORIES_DIR / name
    for path in sorted(inventory.glob("group_vars/**/*.yml")) + sorted(inventory.glob("host_vars/**/*.yml")):
        merged.update(_yaml(path))
    hosts = _yaml(inventory / "hosts.yml")

    def walk(node: dict) -> None:
        for host_vars in (node.get("hosts") or {}).values():
            merged.update(host_vars or {})
        merged.update(node.get("vars") or {})
        for child in (node.get("children") or {}).values():
            walk(child or {})

    walk(hosts.get("all") or {})
    return merged


def _timer_task() -> dict:
    tasks = yaml.safe_load((ROLE / "tasks" / "unattended_upgrades.yml").read_text(encoding="utf-8"))
    found = [t for t in tasks if t.get("loop") == ["apt-daily.timer", "apt-daily-upgrade.timer"]]
    assert len(found) == 1, found
    return found[0]["ansible.builtin.systemd_service"]


def test_production_defaults_keep_the_timers_on():
    assert _yaml(ROLE / "defaults" / "main.yml")[VAR] is True
    spec = _yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"][VAR]
    assert spec["type"] == "bool" and spec["default"] is True
    assert VAR not in _inventory_vars("example-production"), "production must keep the role default"


def test_the_lab_holds_the_timers():
    assert _inventory_vars("lab")[VAR] is False


@pytest.mark.parametrize(("value", "enabled", "state"), [(True, "True", "started"), (False, "False", "stopped")])
def test_the_timer_task_follows_the_variable(value: bool, enabled: str, state: str):
    task = _timer_task()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True)  # no markup in these values
    context = {VAR: value}
    assert env.from_string(task["enabled"]).render(context) == enabled
    assert env.from_string(task["state"]).render(context) == state
