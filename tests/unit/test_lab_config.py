"""Lab configuration and secrets, read from the real lab inventory."""

from __future__ import annotations

import stat
from pathlib import Path

from qnprov import lab


def test_lab_config_comes_from_the_inventory(tmp_path: Path):
    config = lab.load_lab_config(lab.LAB_INVENTORY)
    assert [h.container for h in config.hosts] == ["qnprov-lab-mail1"]
    assert config.hosts[0].publish["submission"] == (10587, 587)
    assert config.base_dn == "dc=quangninh,dc=test"
    assert len(config.accounts) >= 2


def test_secrets_are_generated_once_with_private_modes(tmp_path: Path):
    base = lab.load_lab_config()
    config = lab.LabConfig(base.inventory, base.hosts, base.domain, base.base_dn, base.accounts, tmp_path / "s")
    created = lab.ensure_secrets(config)
    assert "ldap_admin" in created and f"account_{config.accounts[0].employee_id}" in created
    assert stat.S_IMODE(config.secrets_dir.stat().st_mode) == 0o700
    for path in config.secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) == 32
    first = config.secret("ldap_admin")
    assert lab.ensure_secrets(config) == []
    assert config.secret("ldap_admin") == first, "secrets must survive re-runs"


def test_two_labs_never_share_secrets(tmp_path: Path):
    base = lab.load_lab_config()
    one = lab.LabConfig(base.inventory, base.hosts, base.domain, base.base_dn, base.accounts, tmp_path / "a")
    two = lab.LabConfig(base.inventory, base.hosts, base.domain, base.base_dn, base.accounts, tmp_path / "b")
    lab.ensure_secrets(one)
    lab.ensure_secrets(two)
    assert one.secret("ldap_admin") != two.secret("ldap_admin")


def test_port_base_moves_every_endpoint(tmp_path: Path):
    moved = lab.with_port_base(lab.load_lab_config(), containers={"mail1": "m1"}, port_base=20000,
                               state=tmp_path)
    assert moved.endpoints()["submission"] == "127.0.0.1:20587"
    assert moved.endpoints()["sieve"] == "127.0.0.1:24190"
    assert moved.hosts[0].container == "m1"


def test_lab_inventory_env_names_another_lab(tmp_path: Path, monkeypatch):
    """Several labs side by side: $QNPROV_LAB_INVENTORY is every lab command's default."""
    import shutil

    import yaml

    copy = tmp_path / "lab-other"
    shutil.copytree(lab.LAB_INVENTORY, copy)
    hosts = yaml.safe_load((copy / "hosts.yml").read_text())
    hosts["all"]["hosts"]["mail1"]["qnprov_lab_container"] = "qnprov-other-mail1"
    (copy / "hosts.yml").write_text(yaml.safe_dump(hosts))
    monkeypatch.delenv(lab.LAB_INVENTORY_ENV, raising=False)
    assert lab.default_inventory() == lab.LAB_INVENTORY
    monkeypatch.setenv(lab.LAB_INVENTORY_ENV, str(copy))
    assert [h.container for h in lab.load_lab_config().hosts] == ["qnprov-other-mail1"]


def test_lab_containers_keep_their_own_resolv_conf():
    """The resolver role's /etc/resolv.conf must survive a restart: podman must not own the file."""
    host = lab.load_lab_config(lab.LAB_INVENTORY).hosts[0]
    args = lab.container_run_args(host)
    assert "--dns=none" in args and args.index("--dns=none") < args.index("/sbin/init")
    assert f"--name={host.container}" in args or args[args.index("--name") + 1] == host.container
