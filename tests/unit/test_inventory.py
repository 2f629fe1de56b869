"""qnprov.inventory: hosts, groups and merged variables as Ansible reads them (no host contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qnprov import inventory, paths
from qnprov.errors import ConfigError


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    """Two groups under a parent, one host in both, variables at every level."""
    root = tmp_path / "inv"
    _write(root / "hosts.yml", {"all": {
        "vars": {"inline_all": "from hosts.yml"},
        "children": {"mail_all": {
            "vars": {"tier": "mail"},
            "children": {
                "directory": {"hosts": {"mx1.example.test": {"ansible_host": "192.0.2.1"}}},
                "mta": {"hosts": {"mx1.example.test": None, "mx2.example.test": {"ansible_port": 2222}}},
            }}}}})
    _write(root / "group_vars" / "all" / "main.yml", {
        "qnprov_domain": "example.test", "tier": "all", "level": "all",
        "secret": "{{ lookup('password', '/dev/null') }}", "nested": {"keep": 1, "when": "{{ x }}"}})
    _write(root / "group_vars" / "mta.yml", {"level": "mta", "relay": True})
    _write(root / "host_vars" / "mx2.example.test.yml", {"level": "host", "ansible_user": "deploy"})
    return root


def test_hosts_and_groups_follow_children(inv: Path) -> None:
    parsed = inventory.load(inv)
    assert parsed.hosts == ["mx1.example.test", "mx2.example.test"]
    assert parsed.groups() == {"directory": ["mx1.example.test"], "mail_all": ["mx1.example.test", "mx2.example.test"],
                               "mta": ["mx1.example.test", "mx2.example.test"]}
    assert parsed.hosts_matching("directory") == ["mx1.example.test"]
    assert parsed.hosts_matching("mta:!directory") == ["mx2.example.test"]
    assert parsed.lab_hosts == [] and not parsed.is_lab


def test_host_vars_merge_with_ansible_precedence(inv: Path) -> None:
    parsed = inventory.load(inv)
    mx1, mx2 = parsed.literal_vars("mx1.example.test"), parsed.literal_vars("mx2.example.test")
    # Ansible's order: host_vars/ over group_vars/<group> over group_vars/all over vars inline in hosts.yml.
    assert (mx1["level"], mx2["level"]) == ("mta", "host")
    assert mx1["tier"] == mx2["tier"] == "all"
    assert mx1["relay"] is True and mx2["relay"] is True
    assert mx1["inline_all"] == "from hosts.yml" and mx1["qnprov_domain"] == "example.test"
    assert (mx1["ansible_host"], mx2["ansible_port"], mx2["ansible_user"]) == ("192.0.2.1", 2222, "deploy")
    assert "ansible_user" not in mx1
    # Templated values stay as Ansible holds them, and literal_vars leaves them out.
    assert parsed.host_vars("mx1.example.test")["secret"] == "{{ lookup('password', '/dev/null') }}"
    assert "secret" not in mx1 and "nested" not in mx1
    assert type(mx1["level"]) is str and type(mx2["ansible_port"]) is int


def test_group_vars_of_all_without_any_host(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "vars-only"
    _write(root / "group_vars" / "all" / "a.yml", {"qnprov_ldap_base_dn": "dc=example,dc=test", "t": "{{ y }}"})
    _write(root / "group_vars" / "all" / "b.yml", {"qnprov_domain": "example.test"})
    parsed = inventory.load(root)
    assert parsed.hosts == []
    assert parsed.literal_group_vars() == {"qnprov_ldap_base_dn": "dc=example,dc=test", "qnprov_domain": "example.test"}
    assert "WARNING" not in capfd.readouterr().err, "a directory of variables is not an unparsable inventory"


def test_the_lab_inventory_is_a_lab(tmp_path: Path) -> None:
    parsed = inventory.load(paths.INVENTORIES_DIR / "lab")
    assert parsed.lab_hosts == ["mail1"] and parsed.is_lab
    assert parsed.literal_vars("mail1")["qnprov_lab_publish"]["smtp"] == [10025, 25]
    assert parsed.literal_group_vars()["qnprov_domain"] == "quangninh.test"


def test_extra_vars_files_win(inv: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.yml"
    _write(extra, {"level": "extra"})
    assert inventory.load(inv, extra_vars_files=[extra]).host_vars("mx2.example.test")["level"] == "extra"


def test_problems_are_one_config_error_naming_the_inventory(tmp_path: Path, inv: Path) -> None:
    with pytest.raises(ConfigError, match="no host 'ghost'"):
        inventory.load(inv / "hosts.yml").host_vars("ghost")
    with pytest.raises(ConfigError, match=r"inventory .*nowhere not found"):
        inventory.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "hosts.yml").write_text("all:\n  hosts: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cannot parse .*hosts\.yml \(YAML parsing failed") as caught:
        inventory.load(broken)
    assert "\n" not in str(caught.value)
    (inv / "group_vars" / "mta.yml").write_text("level: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"inventory .*inv: variables of mx2.example.test: ") as caught:
        inventory.load(inv).host_vars("mx2.example.test")
    assert "\n" not in str(caught.value)


def test_lab_config_reads_hosts_under_children_and_vars_from_host_and_group_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab inventory laid out like a production one: the lab reads it as Ansible does."""
    from qnprov import lab

    monkeypatch.setenv("QNPROV_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "lab-dev"
    _write(root / "hosts.yml", {"all": {"children": {"mta": {"hosts": {"mail9": None}}}}})
    _write(root / "host_vars" / "mail9.yml", {"qnprov_lab_container": "qnprov-dev-mail9",
                                              "qnprov_lab_publish": {"smtp": [20025, 25]}})
    _write(root / "group_vars" / "all.yml", {
        "qnprov_domain": "dev.test", "qnprov_ldap_base_dn": "dc=dev,dc=test",
        "openldap_accounts": [{"employee_id": "D1", "mail": "a@dev.test", "password": "{{ lookup('x') }}"}]})
    config = lab.load_lab_config(root)
    assert [(h.name, h.container, h.hostname, h.publish) for h in config.hosts] == [
        ("mail9", "qnprov-dev-mail9", "mail9", {"smtp": (20025, 25)})]
    assert (config.domain, config.base_dn) == ("dev.test", "dc=dev,dc=test")
    assert [(a.employee_id, a.address) for a in config.accounts] == [("D1", "a@dev.test")]
    (root / "group_vars" / "all.yml").write_text("qnprov_domain: dev.test\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not set qnprov_ldap_base_dn"):
        lab.load_lab_config(root)
