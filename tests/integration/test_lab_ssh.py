"""The lab is reached as production is (issue 15): SSH as deploy with the lab's key, host key checked.

Traffic goes only to the lab host's sshd published on host loopback.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from qnprov import lab, labssh

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def config() -> lab.LabConfig:
    return lab.load_lab_config()


def _ssh(config: lab.LabConfig, *command: str, known_hosts: Path | None = None,
         extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    host = config.hosts[0]
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or config.ssh.known_hosts}", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10", "-i", str(config.ssh.key), "-p", str(labssh.ssh_port(host)), *extra,
            f"{labssh.DEPLOY_USER}@127.0.0.1", *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_deploy_logs_in_with_the_lab_key_and_becomes_root(config: lab.LabConfig) -> None:
    assert stat.S_IMODE(config.ssh.key.stat().st_mode) == 0o600
    proc = _ssh(config, "id -un; sudo -n id -u")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [labssh.DEPLOY_USER, "0"]


def test_an_unknown_host_key_is_refused(config: lab.LabConfig, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = _ssh(config, "true", known_hosts=empty)
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_the_known_host_entry_is_the_containers_own_key(config: lab.LabConfig) -> None:
    host = config.hosts[0]
    key = subprocess.run(["podman", "exec", host.container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert labssh.known_hosts_line(host, key) in config.ssh.known_hosts.read_text().splitlines()


def test_passwords_are_not_offered(config: lab.LabConfig) -> None:
    proc = _ssh(config, "true", extra=("-o", "PreferredAuthentications=password,keyboard-interactive",
                                       "-o", "PubkeyAuthentication=no"))
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr
