"""Throwaway containers from the project's image, for tests that need one.

``plain_container`` is the image with ``sleep`` as its only process (files and
commands); ``systemd_container`` boots systemd in it (services). Both remove the
container whatever happens.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from qnprov import testbed


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextmanager
def plain_container(prefix: str) -> Iterator[str]:
    testbed.prepare_host()
    testbed.build_image()
    name = unique_name(prefix)
    subprocess.run(["podman", "run", "-d", "--name", name, testbed.IMAGE_REF, "sleep", "600"], check=True,
                   capture_output=True)
    try:
        yield name
    finally:
        testbed.remove_container(name)


@contextmanager
def systemd_container(prefix: str) -> Iterator[str]:
    testbed.prepare_host()
    testbed.build_image()
    name = unique_name(prefix)
    testbed.remove_container(name)
    subprocess.run(testbed.systemd_run_args(name), check=True, capture_output=True)
    try:
        assert testbed.wait_for_systemd(name) in {"running", "degraded"}
        yield name
    finally:
        testbed.remove_container(name)


def exec_in(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """``podman exec`` in the container; the caller judges the result."""
    return subprocess.run(["podman", "exec", name, *cmd], capture_output=True, text=True, check=False)
