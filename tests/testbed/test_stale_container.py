"""A container whose processes died behind podman's back is recreated, not reused.

This happened in CI: the sandbox that ran the previous session killed every
process, conmon included, so podman's record still said "running" while runc
refused to exec. `qnprov lab up` reused the corpse and Ansible failed at its
first task ("Failed to create temporary directory").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from qnprov import lab, testbed


@pytest.fixture()
def name():
    testbed.prepare_host()
    testbed.build_image()
    name = f"qnprov-test-stale-{uuid.uuid4().hex[:8]}"
    testbed.remove_container(name)
    try:
        yield name
    finally:
        testbed.remove_container(name)


def _host(host_name: str, container: str) -> lab.LabHost:
    """A lab host as `lab up` sees one: it publishes sshd on a free loopback port (every lab
    host is reached over SSH, so ensure_container also sets that up)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return lab.LabHost(name=host_name, container=container, hostname=f"{host_name}.quangninh.test",
                       publish={"ssh": (port, 22)})


def _inspect(name: str, field: str) -> str:
    return subprocess.run(["podman", "inspect", "--format", "{{." + field + "}}", name],
                          check=True, capture_output=True, text=True).stdout.strip()


def _kill_behind_podmans_back(name: str) -> None:
    for pid in (_inspect(name, "State.ConmonPid"), _inspect(name, "State.Pid")):
        os.kill(int(pid), signal.SIGKILL)


def test_a_container_killed_behind_podmans_back_is_stale_then_recreated(name: str, tmp_path: Path):
    host = _host("stale", name)
    assert lab.ensure_container(host, tmp_path) is True
    assert lab.container_state(name) == "running"
    first_id = _inspect(name, "Id")

    _kill_behind_podmans_back(name)
    # podman's own record still says running: that is the trap.
    assert _inspect(name, "State.Status") == "running"
    assert lab.container_state(name) == "stale"

    assert lab.ensure_container(host, tmp_path) is True
    assert _inspect(name, "Id") != first_id
    assert lab.container_state(name) == "running"
    proc = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() in {"running", "degraded"}


def test_a_live_container_is_reused(name: str, tmp_path: Path):
    host = _host("live", name)
    assert lab.ensure_container(host, tmp_path) is True
    first_id = _inspect(name, "Id")
    assert lab.ensure_container(host, tmp_path) is False
    assert _inspect(name, "Id") == first_id
