"""The lab connects as production does (issue 15): SSH, a generated key, checked host keys.

These read the real lab and production inventories and run the real ssh-keygen; the
end-to-end login is tests/integration/test_lab_ssh.py.
"""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

import pytest
import yaml

from qnprov import lab, labssh, paths, runner
from qnprov.errors import ConfigError, ExternalError

LAB = paths.INVENTORIES_DIR / "lab"
PRODUCTION = paths.INVENTORIES_DIR / "example-production"


def _all_vars(inventory: Path) -> dict[str, object]:
    """The inventory's own vars for all hosts: hosts.yml's all.vars, then group_vars/all."""
    merged = dict(yaml.safe_load((inventory / "hosts.yml").read_text())["all"].get("vars") or {})
    merged.update(yaml.safe_load((inventory / "group_vars" / "all" / "main.yml").read_text()) or {})
    return merged


def _host_vars(inventory: Path, host: str) -> dict[str, object]:
    return yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["hosts"][host]


def test_lab_logs_in_as_production_does() -> None:
    production = yaml.safe_load((PRODUCTION / "hosts.yml").read_text())["all"]["vars"]
    lab_vars = {**_all_vars(LAB), **_host_vars(LAB, "mail1")}
    assert lab_vars["ansible_connection"] == "ssh"
    assert lab_vars["ansible_user"] == production["ansible_user"] == labssh.DEPLOY_USER
    assert lab_vars["ansible_become"] is production["ansible_become"] is True
    assert lab_vars["ansible_host"] == "127.0.0.1"
    assert lab_vars["ansible_port"] == "{{ qnprov_lab_publish.ssh[0] }}"
    assert lab_vars["ansible_ssh_pipelining"] is True
    args = str(lab_vars["ansible_ssh_args"]).split()
    assert "ControlMaster=auto" in args and any(a.startswith("ControlPersist=") for a in args)
    assert str(lab_vars["ansible_control_path_dir"]).startswith("{{ qnprov_state_dir }}/")
    assert str(lab_vars["ansible_ssh_private_key_file"]) == "{{ qnprov_state_dir }}/ssh/id_ed25519"


def test_molecule_keeps_its_root_podman_connection() -> None:
    """molecule links the lab's group_vars; the SSH login settings must not reach it."""
    group_vars = yaml.safe_load((LAB / "group_vars" / "all" / "main.yml").read_text())
    assert not {k for k in group_vars if k.startswith(("ansible_ssh", "ansible_user", "ansible_become",
                                                        "ansible_control"))}
    scenario = paths.PROJECT_ROOT / "molecule" / "default"
    inventory = yaml.safe_load((scenario / "molecule.yml").read_text())["provisioner"]["inventory"]
    # With `links`, molecule ignores inline host_vars (an inline ansible_become: false was
    # silently dropped and the play's become: true needed sudo): the host's variables must
    # come from the linked host_vars directory.
    assert "host_vars" not in inventory and inventory["links"]["host_vars"] == "host_vars/"
    host_vars = yaml.safe_load((scenario / "host_vars" / "qnprov-molecule-mail1.yml").read_text())
    assert host_vars["ansible_become"] is False


def test_host_keys_stay_checked() -> None:
    common = str(_all_vars(LAB)["ansible_ssh_common_args"])
    assert "-o StrictHostKeyChecking=yes" in common
    assert "-o UserKnownHostsFile={{ qnprov_state_dir }}/ssh/known_hosts" in common
    for inventory in (LAB, PRODUCTION):
        for path in inventory.rglob("*.yml"):
            assert "StrictHostKeyChecking=no" not in path.read_text(), path
    cfg = configparser.ConfigParser()
    cfg.read(paths.ANSIBLE_CFG)
    assert cfg.getboolean("defaults", "host_key_checking") is True


def test_the_ssh_port_is_a_published_loopback_port() -> None:
    config = lab.load_lab_config(LAB)
    assert labssh.ssh_port(config.hosts[0]) == 10022
    assert config.hosts[0].publish["ssh"] == (10022, 22)
    without = lab.LabHost("mail1", "c", "mail1.test", {"smtp": (10025, 25)})
    with pytest.raises(ConfigError, match="no ssh port"):
        labssh.ssh_port(without)


def test_the_deploy_key_is_generated_once_and_private(tmp_path: Path) -> None:
    files = labssh.SshFiles(tmp_path / "state")
    key = labssh.ensure_ssh_key(files)
    assert key == tmp_path / "state" / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.control_dir.stat().st_mode) == 0o700
    assert key.with_suffix(".pub").read_text().startswith("ssh-ed25519 ")
    assert "OPENSSH PRIVATE KEY" in key.read_text()
    first = key.read_text()
    labssh.ensure_ssh_key(files)
    assert key.read_text() == first, "a second lab up must keep the key"


def test_ensure_secrets_creates_the_ssh_key(tmp_path: Path) -> None:
    base = lab.load_lab_config(LAB)
    config = lab.LabConfig(base.inventory, base.hosts, base.domain, base.base_dn, base.accounts, tmp_path / "s")
    assert "ssh/id_ed25519" in lab.ensure_secrets(config)
    assert config.ssh.key.is_file()
    assert "ssh/id_ed25519" not in lab.ensure_secrets(config)


def test_known_hosts_entry_is_replaced_for_a_new_container(tmp_path: Path) -> None:
    files = labssh.SshFiles(tmp_path)
    files.dir.mkdir()
    host = lab.LabHost("mail1", "c", "mail1.test", {"ssh": (11022, 22)})
    other = "[127.0.0.1]:12022 ssh-ed25519 AAAAother"
    files.known_hosts.write_text(other + "\n[127.0.0.1]:11022 ssh-ed25519 AAAAold\n")
    line = labssh.known_hosts_line(host, "ssh-ed25519 AAAAnew root@mail1\n")
    assert line == "[127.0.0.1]:11022 ssh-ed25519 AAAAnew"
    labssh.write_known_host(files, line)
    assert files.known_hosts.read_text().splitlines() == [other, line]
    assert stat.S_IMODE(files.known_hosts.stat().st_mode) == 0o600
    with pytest.raises(ExternalError, match="unexpected sshd host key"):
        labssh.known_hosts_line(host, "ssh-rsa AAAA")
    with pytest.raises(ExternalError, match="unexpected sshd host key"):
        labssh.known_hosts_line(host, "")


def test_qnprov_runs_cache_facts_in_the_state(tmp_path: Path) -> None:
    env = runner.ansible_env({"QNPROV_STATE_DIR": str(tmp_path)})
    assert env["ANSIBLE_GATHERING"] == "smart"
    assert env["ANSIBLE_CACHE_PLUGIN"] == "jsonfile"
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "facts")
    assert int(env["ANSIBLE_CACHE_PLUGIN_TIMEOUT"]) > 0


def test_a_replaced_host_forgets_its_facts_and_control_sockets(tmp_path: Path) -> None:
    facts = runner.fact_cache_dir(tmp_path)
    facts.mkdir()
    for name in ("s1_mail1", "s1_mail10", "mail2"):
        (facts / name).write_text("{}")
    files = labssh.SshFiles(tmp_path)
    files.control_dir.mkdir(parents=True)
    (files.control_dir / "0123456789").write_text("")
    labssh.forget_host(tmp_path, "mail1")
    assert sorted(p.name for p in facts.iterdir()) == ["mail2", "s1_mail10"]
    assert list(files.control_dir.iterdir()) == []
    assert runner.fact_cache_host("s1_mail1") == "mail1"
    assert runner.fact_cache_host("mail1") == "mail1"


def test_ansible_runner_keeps_host_key_checking_and_our_fact_cache(tmp_path: Path) -> None:
    """What ansible-runner really exports to ansible-playbook, given qnprov's environment."""
    from ansible_runner.config.runner import RunnerConfig

    env = runner.ansible_env({"QNPROV_STATE_DIR": str(tmp_path / "state")})
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "site.yml").write_text("[]\n")
    config = RunnerConfig(private_data_dir=str(tmp_path), playbook="site.yml", envvars=env,
                          suppress_env_files=True, **runner.runner_fact_cache(env))
    config.prepare()
    assert config.env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert config.env["ANSIBLE_CACHE_PLUGIN"] == "jsonfile"
    assert config.env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "state" / "facts")
    assert config.env["ANSIBLE_GATHERING"] == "smart"


def test_a_running_container_without_the_ssh_port_is_replaced(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """A lab container from before SSH has no 22/tcp mapping; podman cannot add one later."""
    import subprocess as sp

    host = lab.LabHost("mail1", "qnprov-x-mail1", "mail1.test", {"ssh": (11022, 22)})
    calls: list[tuple[str, ...]] = []
    mapping = {"22/tcp": ""}

    def podman(*args: str, **_: object) -> sp.CompletedProcess[str]:
        calls.append(args)
        if args[0] == "port":
            out = mapping["22/tcp"]
            return sp.CompletedProcess(args, 0 if out else 125, out, "" if out else "no port 22 published")
        return sp.CompletedProcess(args, 0, "", "")

    removed: list[str] = []
    monkeypatch.setattr(lab, "podman", podman)
    monkeypatch.setattr(lab, "container_state", lambda name: "running")
    monkeypatch.setattr(lab.testbed, "remove_container", lambda name: removed.append(name))
    monkeypatch.setattr(lab.testbed, "run_command", lambda *a, **k: sp.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(lab.testbed, "wait_for_systemd", lambda name: "running")
    monkeypatch.setattr(lab, "bootstrap_ssh", lambda h, files: "")
    assert lab.ensure_container(host, tmp_path) is True
    assert removed == ["qnprov-x-mail1"]
    mapping["22/tcp"] = "127.0.0.1:11022\n"
    removed.clear()
    assert lab.ensure_container(host, tmp_path) is False
    assert removed == []
    mapping["22/tcp"] = "127.0.0.1:10022\n"  # another lab's port: replaced too
    assert lab.ensure_container(host, tmp_path) is True
