"""How ``qnprov store`` asks a store's replicator: the parser and the real Ansible path.

The ad-hoc run is real (ansible-runner, the inventory's connection settings): once to a
host whose SSH port refuses connections (the store is down), once to a host reached
with the local connection, where ``doveadm`` on PATH is a stand-in printing the
format of Dovecot 2.3's ``doveadm -f tab replicator status '*'`` (no Dovecot here).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from qnprov.errors import ConfigError, ExternalError
from qnprov.stores.probe import AnsibleProbe, StoreDown, inventory_host_for, parse_replicator_status

HEADER = "username\tpriority\tfast sync\tfull sync\tsuccess sync\tfailed\tnext sync secs"


def test_parse_replicator_status() -> None:
    states = parse_replicator_status(
        f"{HEADER}\nAnNV@quangninh.test\tnone\t00:00:03\t01:00:00\t00:00:03\t-\t00:00:00\n"
        "binhtt@quangninh.test\tlow\t-\t-\t-\ty\t00:05:00\n"
        "cuong@quangninh.test\tnone\t26:01:02\t26:01:02\t26:01:02\ty\t00:00:10\n")
    assert states["annv@quangninh.test"].last_success_seconds == 3
    assert states["annv@quangninh.test"].last_failed is False
    assert states["binhtt@quangninh.test"].last_success_seconds is None  # never synced
    assert states["cuong@quangninh.test"].last_success_seconds == 26 * 3600 + 62
    assert states["cuong@quangninh.test"].last_failed is True
    assert parse_replicator_status("") == {}


@pytest.mark.parametrize("text", ["user\tstatus\nx\ty\n", f"{HEADER}\nshort\tline\n"])
def test_unexpected_output_is_an_error(text: str) -> None:
    with pytest.raises(ExternalError, match="unexpected doveadm replicator status"):
        parse_replicator_status(text)


def test_inventory_host_for_a_store_name() -> None:
    hosts = {"ha1": {"qnprov_lab_hostname": "ha1.quangninh.test"}, "mail2": {}, "x": {"dovecot_store_name": "s.t.v"}}
    assert inventory_host_for("ha1.quangninh.test", hosts) == "ha1"
    assert inventory_host_for("mail2.quangninh.test", hosts) == "mail2"
    assert inventory_host_for("S.T.V", hosts) == "x"
    with pytest.raises(ConfigError, match="no inventory host is the mail store"):
        inventory_host_for("other.quangninh.test", hosts)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_a_store_whose_ssh_refuses_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QNPROV_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"store1": {
        "ansible_host": "127.0.0.1", "ansible_port": _closed_port(), "ansible_user": "deploy",
        "ansible_ssh_common_args": "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "dovecot_store_name": "store1.quangninh.test"}}}}))
    with pytest.raises(StoreDown, match=r"store1: .*(refused|Connection)"):
        AnsibleProbe(str(tmp_path / "inv"), timeout=60).replicator_status("store1.quangninh.test")


def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doveadm_script: str) -> tuple[Path, Path]:
    """An inventory whose store2 is this machine (local connection), with ``doveadm`` on PATH
    a stand-in running ``doveadm_script``; (inventory, the stand-in)."""
    monkeypatch.setenv("QNPROV_STATE_DIR", str(tmp_path / "state"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    doveadm = bin_dir / "doveadm"
    doveadm.write_text(doveadm_script)
    doveadm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"store2": {
        "ansible_connection": "local", "ansible_python_interpreter": __import__("sys").executable}}}}))
    return tmp_path / "inv", doveadm


def test_a_store_that_answers_over_the_deploy_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prints a status table only for exactly the arguments the probe must send.
    inventory, doveadm = local_store(tmp_path, monkeypatch, (
        "#!/bin/sh\n"
        '[ "$*" = "-f tab replicator status *" ] || { echo "bad args: $*" >&2; exit 64; }\n'
        f"printf '{HEADER}\\n'\n"
        "printf 'annv@quangninh.test\\tnone\\t00:00:03\\t01:00:00\\t00:00:07\\t-\\t00:00:00\\n'\n"))
    states = AnsibleProbe(str(inventory), timeout=120).replicator_status("store2.quangninh.test")
    assert list(states) == ["annv@quangninh.test"]
    assert states["annv@quangninh.test"].last_success_seconds == 7

    doveadm.write_text("#!/bin/sh\necho 'Fatal: net_connect_unix(/run/dovecot/replicator-doveadm) failed: "
                       "No such file or directory' >&2\nexit 75\n")
    with pytest.raises(StoreDown, match="replicator-doveadm"):
        AnsibleProbe(str(inventory), timeout=120).replicator_status("store2.quangninh.test")


def test_the_status_of_a_20000_account_store_comes_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ansible-runner drops a result over MAX_EVENT_RES (700,000 characters by default) and
    reports the task ok with no output: 20,000 accounts' status is about 1.5 MB of it."""
    inventory, _ = local_store(tmp_path, monkeypatch, (
        "#!/bin/sh\n"
        f"printf '{HEADER}\\n'\n"
        "i=0; while [ $i -lt 20000 ]; do "
        "printf 'user%05d@quangninh.test\\tnone\\t00:00:03\\t01:00:00\\t00:00:07\\t-\\t00:00:00\\n' $i; "
        "i=$((i+1)); done\n"))
    states = AnsibleProbe(str(inventory), timeout=300).replicator_status("store2.quangninh.test")
    assert len(states) == 20000 and states["user19999@quangninh.test"].last_success_seconds == 7
