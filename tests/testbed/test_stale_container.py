"""A container whose processes died behind podman's back is recreated, not reused.

This happened in CI: the sandbox that ran the previous session killed every
process, conmon included, so podman's record still said "running" while runc
refused to exec. `qnprov lab up` reused the corpse and Ansible failed at its
first task ("Failed to create temporary directory").
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

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


def _inspect(name: str, field: str) -> str:
    return subprocess.run(["podman", "inspect", "--format", "{{." + field + "}}", name],
                          check=True, capture_output=True, text=True).stdout.strip()


def _kill_behind_podmans_back(name: str) -> None:
    for pid in (_inspect(name, "State.ConmonPid"), _inspect(name, "State.Pid")):
        os.kill(int(pid), signal.SIGKILL)


def test_a_container_killed_behind_podmans_back_is_stale_then_recreated(name: str):
    host = lab.LabHost(name="stale", container=name, hostname="stale.quangninh.test", publish={})
    assert lab.ensure_container(host) is True
    assert lab.container_state(name) == "running"
    first_id = _inspect(name, "Id")

    _kill_behind_podmans_back(name)
    # podman's own record still says running: that is the trap.
    assert _inspect(name, "State.Status") == "running"
    assert lab.container_state(name) == "stale"

    assert lab.ensure_container(host) is True
    assert _inspect(name, "Id") != first_id
    assert lab.container_state(name) == "running"
    proc = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() in {"running", "degraded"}


def test_a_live_container_is_reused(name: str):
    host = lab.LabHost(name="live", container=name, hostname="live.quangninh.test", publish={})
    assert lab.ensure_container(host) is True
    first_id = _inspect(name, "Id")
    assert lab.ensure_container(host) is False
    assert _inspect(name, "Id") == first_id
