"""Multi-host labs: inventories/lab-ha, the lab network, and `-i NAME` on every lab command."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from qnprov import inventory, lab, lab_cli, labcheck, paths
from qnprov.cli import app
from qnprov.errors import ConfigError

LAB_HA = paths.INVENTORIES_DIR / "lab-ha"


def test_every_lab_command_takes_an_inventory_name_or_path(monkeypatch: pytest.MonkeyPatch):
    """`-i lab-ha`, `-i inventories/lab-ha` and the absolute path name the same inventory,
    for every command of `qnprov lab` (as `qnprov deploy -i` does)."""
    seen: list[tuple[str, Path]] = []

    def record(path: Path | None = None) -> lab.LabConfig:
        assert path is not None
        seen.append((command, path))
        raise ConfigError(f"recorded {path}")

    monkeypatch.setattr(lab, "load_lab_config", record)
    monkeypatch.chdir(paths.PROJECT_ROOT)
    commands = sorted(str(c.name) for c in lab_cli.lab_app.registered_commands)
    assert commands == ["down", "drill", "smoke", "status", "up"]
    for command in commands:
        for spelling in ("lab-ha", "inventories/lab-ha", str(LAB_HA)):
            result = CliRunner().invoke(app, ["lab", command, "-i", spelling])
            # cliout.main turns the ConfigError into one line and exit code 2; the runner sees it raised.
            assert isinstance(result.exception, ConfigError), (command, spelling, result.output)
            assert str(result.exception) == f"recorded {LAB_HA}"
    assert len(seen) == 15 and {path for _, path in seen} == {LAB_HA}
    assert [c for c, _ in seen] == [c for c in commands for _ in range(3)]
    missing = CliRunner().invoke(app, ["lab", "status", "-i", "lab-nowhere"])
    assert isinstance(missing.exception, ConfigError)
    assert str(missing.exception) == "inventory 'lab-nowhere' not found (neither a path nor inventories/lab-nowhere)"


def test_lab_ha_is_the_designed_two_host_lab():
    config = lab.load_lab_config(LAB_HA)
    assert config.network == lab.LabNetwork("qnprov-ha", "10.89.7.0/24")
    ha1, ha2 = config.hosts
    assert (ha1.name, ha1.container, ha1.hostname, ha1.ip) == ("ha1", "qnprov-ha-ha1", "ha1.quangninh.test",
                                                               "10.89.7.11")
    assert (ha2.name, ha2.container, ha2.hostname, ha2.ip) == ("ha2", "qnprov-ha-ha2", "ha2.quangninh.test",
                                                               "10.89.7.12")
    assert ha1.peers == (("ha2.quangninh.test", "10.89.7.12"),)
    assert ha2.peers == (("ha1.quangninh.test", "10.89.7.11"),)
    # ha1 publishes on 11xxx, ha2 on 12xxx, the same container ports as the single lab.
    assert ha1.publish["ssh"] == (11022, 22) and ha1.publish["smtp"] == (11025, 25)
    assert ha1.publish["submission"] == (11587, 587) and ha2.publish["ssh"] == (12022, 22)
    single = lab.load_lab_config(lab.LAB_INVENTORY).hosts[0]
    for host, prefix in ((ha1, "11"), (ha2, "12")):
        assert {k: cp for k, (_, cp) in host.publish.items()} == {k: cp for k, (_, cp) in single.publish.items()}
        assert all(str(hp).startswith(prefix) and len(str(hp)) == 5 for hp, _ in host.publish.values())
    assert config.endpoints(ha2)["imaps"] == "127.0.0.1:12993"
    assert (config.domain, config.base_dn) == ("quangninh.test", "dc=quangninh,dc=test")
    assert [a.address for a in config.accounts] == [a.address for a in lab.load_lab_config(lab.LAB_INVENTORY).accounts]


def test_lab_ha_groups_and_host_vars():
    parsed = inventory.load(LAB_HA)
    groups = parsed.groups()
    for group in ("directory", "mta", "store", "mail_all"):
        assert groups[group] == ["ha1", "ha2"], group
    assert parsed.host_vars("ha1")["openldap_server_id"] == 1
    assert parsed.host_vars("ha2")["openldap_server_id"] == 2


def test_lab_ha_reuses_the_lab_settings_and_names_each_host_in_its_certificate():
    """The lab's group_vars are shared (a link), and the TLS name is each host's own hostname."""
    link = LAB_HA / "group_vars" / "all" / "main.yml"
    assert link.is_symlink()
    assert link.resolve() == (lab.LAB_INVENTORY / "group_vars" / "all" / "main.yml").resolve()
    parsed = inventory.load(LAB_HA)
    for host, name in (("ha1", "ha1.quangninh.test"), ("ha2", "ha2.quangninh.test")):
        hv = parsed.host_vars(host)
        assert str(hv["common_tls_fqdn"]).replace(" ", "") == "{{qnprov_lab_hostname|default('mail1.quangninh.test')}}"
        assert hv["qnprov_lab_hostname"] == name
    # zz_lab_ha.yml is read after main.yml and wins: the resolver names both hosts at their addresses.
    zones = {z["name"]: z["data"] for z in parsed.literal_vars("ha1")["resolver_local_zones"]}
    assert "ha1.quangninh.test. 3600 IN A 10.89.7.11" in zones["quangninh.test"]
    assert "ha2.quangninh.test. 3600 IN A 10.89.7.12" in zones["quangninh.test"]
    assert not any("mail1" in line for line in zones["quangninh.test"])
    assert "10.89.7.1" in parsed.literal_vars("ha2")["os_hardening_fail2ban_ignoreip"]


def test_lab_ha_containers_join_the_lab_network_with_their_peers():
    ha1, ha2 = lab.load_lab_config(LAB_HA).hosts
    assert lab.container_run_args(ha2).count("--add-host=ha1.quangninh.test:10.89.7.11") == 1
    args = lab.container_run_args(ha1)
    image = args.index(lab.testbed.IMAGE_REF)
    assert args[args.index("--network") + 1] == "qnprov-ha"
    assert args[args.index("--ip") + 1] == "10.89.7.11"
    assert [a for a in args if a.startswith("--add-host")] == ["--add-host=ha2.quangninh.test:10.89.7.12"]
    assert args.index("--ip") < image and "127.0.0.1:11025:25" in args
    # The single lab stays on podman's default network, with no static address.
    single = lab.container_run_args(lab.load_lab_config(lab.LAB_INVENTORY).hosts[0])
    assert "--network" not in single and "--ip" not in single
    assert not any(a.startswith("--add-host") for a in single)


def _copy(tmp_path: Path) -> tuple[Path, dict]:
    copy = tmp_path / "lab-x"
    shutil.copytree(LAB_HA, copy, symlinks=False)
    return copy, yaml.safe_load((copy / "hosts.yml").read_text())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda h: h["all"]["hosts"]["ha2"].__setitem__("qnprov_lab_ip", "10.89.8.12"),
     "host ha2: qnprov_lab_ip 10.89.8.12 is not a host address of qnprov-ha (10.89.7.0/24; "
     "the first address is the gateway)"),
    (lambda h: h["all"]["hosts"]["ha2"].__setitem__("qnprov_lab_ip", "10.89.7.1"),
     "host ha2: qnprov_lab_ip 10.89.7.1 is not a host address of qnprov-ha (10.89.7.0/24; "
     "the first address is the gateway)"),
    (lambda h: h["all"]["hosts"]["ha2"].__setitem__("qnprov_lab_ip", "10.89.7.11"),
     "hosts ha1 and ha2 both use address 10.89.7.11"),
    (lambda h: h["all"]["hosts"]["ha2"]["qnprov_lab_publish"].__setitem__("smtp", [11025, 25]),
     "hosts ha1 and ha2 both use host port 11025"),
    (lambda h: h["all"]["hosts"]["ha2"].pop("qnprov_lab_ip"),
     "host ha2: qnprov_lab_ip and the all group's qnprov_lab_network go together "
     "(a static address on the lab network)"),
])
def test_an_incoherent_lab_network_is_refused(tmp_path: Path, edit, message: str):
    copy, hosts = _copy(tmp_path)
    edit(hosts)
    (copy / "hosts.yml").write_text(yaml.safe_dump(hosts))
    with pytest.raises(ConfigError) as caught:
        lab.load_lab_config(copy)
    assert str(caught.value) == f"{copy}: {message}"


class FakePodman:
    """Records podman calls; answers `network exists/inspect` from a dict of networks."""

    def __init__(self, networks: dict[str, str]) -> None:
        self.networks = dict(networks)
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        rc, stdout = 0, ""
        if args[:2] == ("network", "exists"):
            rc = 0 if args[2] in self.networks else 1
        elif args[:2] == ("network", "inspect"):
            # What podman 4.3 (Debian 12, CNI backend) prints.
            stdout = json.dumps([{"name": args[2], "driver": "bridge", "dns_enabled": False,
                                  "subnets": [{"subnet": self.networks[args[2]], "gateway": "10.89.7.1"}]}])
        elif args[:2] == ("network", "create"):
            self.networks[args[-1]] = args[args.index("--subnet") + 1]
        elif args[:2] == ("network", "rm"):
            del self.networks[args[2]]
        elif args[0] == "inspect":
            rc = 1  # no such container
        return subprocess.CompletedProcess(list(args), rc, stdout, "")


def test_the_lab_network_is_created_once(monkeypatch: pytest.MonkeyPatch):
    fake = FakePodman({})
    monkeypatch.setattr(lab, "podman", fake)
    network = lab.LabNetwork("qnprov-ha", "10.89.7.0/24")
    assert lab.ensure_network(network) is True
    assert ("network", "create", "--subnet", "10.89.7.0/24", "qnprov-ha") in fake.calls
    fake.calls.clear()
    assert lab.ensure_network(network) is False
    assert not any(c[:2] == ("network", "create") for c in fake.calls)


def test_a_same_named_network_on_another_subnet_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lab, "podman", FakePodman({"qnprov-ha": "10.89.9.0/24"}))
    with pytest.raises(ConfigError) as caught:
        lab.ensure_network(lab.LabNetwork("qnprov-ha", "10.89.7.0/24"))
    assert str(caught.value) == ("podman network qnprov-ha exists on 10.89.9.0/24, not 10.89.7.0/24; "
                                 "remove it (qnprov lab down --purge) or change the inventory")


def test_down_removes_every_container_and_the_network_only_on_purge(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path):
    base = lab.load_lab_config(LAB_HA)
    config = lab.LabConfig(base.inventory, base.hosts, base.domain, base.base_dn, base.accounts,
                           tmp_path / "state", base.network)
    config.state.mkdir()
    fake = FakePodman({"qnprov-ha": "10.89.7.0/24"})
    removed: list[str] = []
    monkeypatch.setattr(lab, "podman", fake)
    monkeypatch.setattr(lab, "container_state", lambda name: "running")
    monkeypatch.setattr(lab.testbed, "remove_container", removed.append)
    assert lab.down(config) == ["qnprov-ha-ha1", "qnprov-ha-ha2"]
    assert "qnprov-ha" in fake.networks and config.state.is_dir()
    assert lab.down(config, purge=True) == ["qnprov-ha-ha1", "qnprov-ha-ha2", "network qnprov-ha"]
    assert fake.networks == {} and not config.state.exists()
    assert removed == ["qnprov-ha-ha1", "qnprov-ha-ha2"] * 2


def test_status_has_one_entry_per_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    base = lab.load_lab_config(LAB_HA)
    config = lab.LabConfig(base.inventory, base.hosts, base.domain, base.base_dn, base.accounts,
                           tmp_path, base.network)
    monkeypatch.setattr(labcheck, "container_state", lambda name: None)
    doc = labcheck.status(config)
    assert doc["running"] is False
    assert [(h["name"], h["container"], h["hostname"], h["address"], h["state"]) for h in doc["hosts"]] == [
        ("ha1", "qnprov-ha-ha1", "ha1.quangninh.test", "10.89.7.11", "absent"),
        ("ha2", "qnprov-ha-ha2", "ha2.quangninh.test", "10.89.7.12", "absent")]
    assert doc["hosts"][1]["endpoints"]["smtp"] == "127.0.0.1:12025"
    assert doc["hosts"][1]["services"]["postfix"] == "absent"
    # The lab-wide keys keep their single-host shape (the first host's endpoints).
    assert doc["endpoints"]["smtp"] == "127.0.0.1:11025"
    assert set(doc) == {"running", "endpoints", "domain", "accounts", "ldap", "ca_cert", "state_dir", "hosts"}
