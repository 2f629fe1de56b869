"""How verify turns inventories into suite targets (no host is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qnprov import lab
from qnprov.controls.target import Endpoint, parse_endpoint
from qnprov.controls.verify import build_targets, lab_targets, remote_target, suite_command
from qnprov.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_lab_inventory_gives_podman_target_with_loopback_endpoints(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("QNPROV_STATE_DIR", str(tmp_path))
    [target] = lab_targets(ROOT / "inventories" / "lab")
    assert target.backend == "podman://qnprov-lab-mail1" and target.lab
    assert target.mail_hostname == "mail1.quangninh.test"
    assert target.endpoints["smtp"] == Endpoint(host="127.0.0.1", port=10025)
    assert target.endpoints["ldaps"] == Endpoint(host="127.0.0.1", port=10636)
    assert all(e.host == "127.0.0.1" for e in target.endpoints.values())
    assert target.extra_tcp_ports == [143, 636]
    assert target.ca_file == str(lab.load_lab_config(ROOT / "inventories" / "lab").ca_cert)
    assert target.ca_file.startswith(str(tmp_path))
    assert target.probe_recipient == "qnprov-verify-probe@quangninh.test"
    assert build_targets(ROOT / "inventories" / "lab") == [target]


def test_remote_host_probes_only_its_own_public_ports() -> None:
    target = remote_target("mx1.quangninh.gov.vn", {"ansible_user": "deploy", "qnprov_domain": "quangninh.gov.vn"})
    assert target.backend == "ssh://deploy@mx1.quangninh.gov.vn" and target.sudo
    assert {e.host for e in target.endpoints.values()} == {"mx1.quangninh.gov.vn"}
    assert {s: e.port for s, e in target.endpoints.items()} == {
        "smtp": 25, "submission": 587, "submissions": 465, "imaps": 993, "sieve": 4190}
    with pytest.raises(ConfigError, match="qnprov_domain"):
        remote_target("mx1", {})
    declared = remote_target("mx2", {"qnprov_domain": "quangninh.gov.vn", "ansible_host": "192.0.2.10",
                                     "qnprov_verify_endpoints": {"smtp": 2525}})
    assert declared.endpoints == {"smtp": Endpoint(host="192.0.2.10", port=2525)}
    with pytest.raises(ConfigError, match="unknown services"):
        remote_target("mx3", {"qnprov_domain": "quangninh.gov.vn", "qnprov_verify_endpoints": {"http": 80}})


def test_inventory_hosts_become_targets_with_their_merged_vars(tmp_path: Path) -> None:
    inventory = tmp_path / "inv"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "host_vars").mkdir()
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    mta:\n      hosts:\n        mx1:\n        mx2:\n          ansible_host: 192.0.2.2\n")
    (inventory / "group_vars" / "all.yml").write_text("qnprov_domain: d.vn\nqnprov_mail_hostname: '{{ x }}'\n")
    (inventory / "host_vars" / "mx1.yml").write_text("ansible_user: deploy\n")
    mx1, mx2 = build_targets(inventory)
    assert (mx1.name, mx1.backend, mx1.sudo, mx1.domain) == ("mx1", "ssh://deploy@mx1", True, "d.vn")
    assert (mx2.name, mx2.backend, mx2.sudo) == ("mx2", "ssh://192.0.2.2", False)
    assert mx2.endpoints["smtp"] == Endpoint(host="192.0.2.2", port=25)
    # A templated value needs a play to render: the default applies, not the raw template.
    assert mx1.mail_hostname == "mx1.d.vn"
    (inventory / "hosts.yml").write_text("all:\n  hosts: {}\n")
    with pytest.raises(ConfigError, match="has no hosts"):
        build_targets(inventory)


def test_endpoint_forms() -> None:
    assert parse_endpoint("smtp://127.0.0.1:10025") == Endpoint(host="127.0.0.1", port=10025)
    assert parse_endpoint({"host": "::1", "port": 25}).address == "[::1]:25"
    with pytest.raises(ConfigError):
        parse_endpoint("127.0.0.1")


def test_suite_command_isolates_the_packaged_suite(tmp_path: Path) -> None:
    command = suite_command(tmp_path / "t.json", tmp_path / "r.json", tmp_path / "p.ini",
                            backend="ssh://deploy@mx1", sudo=True, scanners=False)
    assert command[command.index("-c") + 1] == str(tmp_path / "p.ini")
    assert "--sudo" in command and command[-2:] == ["-m", "not scanner"]
    assert command[command.index("--hosts") + 1] == "ssh://deploy@mx1"
