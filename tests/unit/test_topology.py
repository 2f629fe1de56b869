"""qnprov/topology.py: layouts that cannot work are refused before anything runs, in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from qnprov import argspec, paths, runner, topology
from qnprov.cli import app
from qnprov.errors import ConfigError


def _inventory(tmp_path: Path, groups: dict[str, list[str]], all_vars: dict[str, Any] | None = None,
               host_vars: dict[str, dict[str, Any]] | None = None, name: str = "site") -> Path:
    """A small inventory: mail_all's children are the groups given, hosts carry host_vars."""
    host_vars = host_vars or {}
    hosts = sorted({h for members in groups.values() for h in members})
    doc = {"all": {"vars": all_vars or {},
                   "hosts": {h: host_vars.get(h) for h in hosts},
                   "children": {"mail_all": {"children": {
                       g: {"hosts": {h: None for h in members}} for g, members in groups.items()}}}}}
    folder = tmp_path / name
    folder.mkdir()
    (folder / "hosts.yml").write_text(yaml.safe_dump(doc))
    return folder


def _refusal(inventory: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        topology.require_valid_topology(inventory)
    return str(caught.value)


TWO_STORES = [{"name": "store1.example.test", "replica": "store2.example.test"},
              {"name": "store2.example.test", "replica": "store1.example.test"}]
GOOD_GROUPS = {"directory": ["store1.example.test", "store2.example.test"],
               "mta": ["mx1.example.test", "mx2.example.test"],
               "store": ["store1.example.test", "store2.example.test"]}


def test_a_coherent_topology_passes(tmp_path: Path):
    inv = _inventory(tmp_path, GOOD_GROUPS, {"openldap_replication_enabled": True, "qnprov_stores": TWO_STORES,
                                             "rspamd_dkim_selector": "qn2027"})
    assert topology.problems(inv) == []
    topology.require_valid_topology(inv)


def test_replication_with_one_directory_provider_is_refused(tmp_path: Path):
    inv = _inventory(tmp_path, {"directory": ["ldap1.example.test"], "mta": ["mx1.example.test"]},
                     host_vars={"ldap1.example.test": {"openldap_replication_enabled": True}})
    assert _refusal(inv) == ("site: topology: openldap_replication_enabled is on but the directory group has "
                             "1 host (ldap1.example.test); multi-provider replication needs at least two "
                             "directory providers")


def test_replication_without_a_directory_group_is_refused(tmp_path: Path):
    inv = _inventory(tmp_path, {"mta": ["mx1.example.test"]}, {"openldap_replication_enabled": "yes"})
    assert _refusal(inv) == ("site: topology: openldap_replication_enabled is on but the directory group has "
                             "no host; multi-provider replication needs at least two directory providers")


def test_one_directory_provider_without_replication_is_fine(tmp_path: Path):
    inv = _inventory(tmp_path, {"directory": ["ldap1.example.test"], "mta": ["mx1.example.test"]},
                     {"openldap_replication_enabled": False})
    assert topology.problems(inv) == []


def test_a_store_without_a_replica_is_refused(tmp_path: Path):
    stores = [{"name": "store1.example.test"}, {"name": "store2.example.test", "replica": "store1.example.test"}]
    inv = _inventory(tmp_path, GOOD_GROUPS, {"qnprov_stores": stores})
    assert _refusal(inv) == ("site: topology: store store1.example.test in qnprov_stores has no replica; "
                             "each store needs another host of the store group as its replica")


def test_a_store_replicating_to_itself_is_refused(tmp_path: Path):
    stores = [{"name": "store1.example.test", "replica": "store1.example.test"}]
    inv = _inventory(tmp_path, GOOD_GROUPS, {"qnprov_stores": stores})
    assert _refusal(inv) == ("site: topology: store store1.example.test has replica store1.example.test, which "
                             "is not another host of the store group (store1.example.test, store2.example.test)")


def test_a_replica_outside_the_store_group_is_refused(tmp_path: Path):
    stores = [{"name": "store1.example.test", "replica": "mx1.example.test"}]
    inv = _inventory(tmp_path, GOOD_GROUPS, {"qnprov_stores": stores})
    assert _refusal(inv) == ("site: topology: store store1.example.test has replica mx1.example.test, which "
                             "is not another host of the store group (store1.example.test, store2.example.test)")


def test_a_store_that_is_not_a_store_host_is_refused(tmp_path: Path):
    stores = [{"name": "store9.example.test", "replica": "store1.example.test"}]
    inv = _inventory(tmp_path, GOOD_GROUPS, {"qnprov_stores": stores})
    assert _refusal(inv) == ("site: topology: store store9.example.test in qnprov_stores is not a host of the "
                             "store group (store1.example.test, store2.example.test)")


def test_stores_match_lab_hosts_by_their_hostname(tmp_path: Path):
    """Lab hosts are named ha1/ha2 in the inventory; their FQDN is qnprov_lab_hostname."""
    groups = {"directory": ["ha1", "ha2"], "mta": ["ha1", "ha2"], "store": ["ha1", "ha2"]}
    hv = {"ha1": {"qnprov_lab_hostname": "ha1.quangninh.test"}, "ha2": {"qnprov_lab_hostname": "ha2.quangninh.test"}}
    stores = [{"name": "ha1.quangninh.test", "replica": "ha2.quangninh.test"},
              {"name": "ha2.quangninh.test", "replica": "ha1.quangninh.test"}]
    assert topology.problems(_inventory(tmp_path, groups, {"qnprov_stores": stores}, hv)) == []


def test_mta_hosts_that_disagree_on_dkim_selectors_are_refused(tmp_path: Path):
    inv = _inventory(tmp_path, GOOD_GROUPS, host_vars={"mx2.example.test": {"rspamd_dkim_selector": "qn2027"}})
    default = yaml.safe_load((paths.ROLES_DIR / "rspamd" / "defaults" / "main.yml").read_text())
    assert default["rspamd_dkim_selector"] == "qn2026"
    assert _refusal(inv) == ("site: topology: the mta hosts disagree on rspamd_dkim_selector (mx1.example.test: "
                             "qn2026, mx2.example.test: qn2027); every MTA must sign with the same selector and key")


def test_every_problem_is_counted_in_the_one_line(tmp_path: Path):
    inv = _inventory(tmp_path, {"directory": ["a.example.test"], "mta": ["a.example.test", "b.example.test"],
                                "store": ["a.example.test"]},
                     {"openldap_replication_enabled": True, "qnprov_stores": [{"name": "a.example.test"}]},
                     {"b.example.test": {"rspamd_dkim_selector": "other"}})
    assert len(topology.problems(inv)) == 3
    line = _refusal(inv)
    assert "\n" not in line and line.endswith(" (and 2 more)")


@pytest.mark.parametrize("name", ["lab", "lab-ha", "example-production"])
def test_the_shipped_inventories_pass(name: str):
    assert topology.problems(paths.INVENTORIES_DIR / name) == []


def test_deploy_refuses_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`qnprov deploy` on an incoherent inventory: the playbook never starts."""
    def must_not_run(*args: object, **kwargs: object) -> runner.PlaybookResult:
        raise AssertionError("the site playbook ran on an inventory whose topology cannot work")

    monkeypatch.setattr(runner, "run_playbook", must_not_run)
    inv = _inventory(tmp_path, {"directory": ["ldap1.example.test"], "mta": ["mx1.example.test"]},
                     {"openldap_replication_enabled": True})
    result = CliRunner().invoke(app, ["deploy", "-i", str(inv), "--check"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == ("site: topology: openldap_replication_enabled is on but the directory group "
                                     "has 1 host (ldap1.example.test); multi-provider replication needs at least "
                                     "two directory providers")


def test_deploy_json_names_each_failure_with_its_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``deploy --json`` says what failed and why, as the text output does, not only the counts."""
    failed = runner.PlaybookResult(rc=2, status="failed", hosts={"mx1.example.test": runner.HostStats(failed=1)},
                                   failures=[runner.TaskFailure("mx1.example.test", "postfix : Check main.cf",
                                                                "postconf: fatal: bad parameter")])
    monkeypatch.setattr(runner, "run_playbook", lambda *a, **k: failed)
    monkeypatch.setattr(argspec, "require_valid_inventory", lambda *a, **k: None)  # variables are not the point
    inv = _inventory(tmp_path, {"directory": ["mx1.example.test"], "mta": ["mx1.example.test"]}, {})
    result = CliRunner().invoke(app, ["deploy", "-i", str(inv), "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["failures"] == [{"host": "mx1.example.test", "task": "postfix : Check main.cf",
                                "message": "postconf: fatal: bad parameter"}]
    assert doc["hosts"]["mx1.example.test"]["failed"] == 1
