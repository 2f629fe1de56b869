"""The lab's backup repository volume is in a running container only while it is attached."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qnprov import testbed
from qnprov_testing import backup_volume


@pytest.fixture()
def container() -> Iterator[str]:
    testbed.prepare_host()
    testbed.build_image()
    name = f"qnprov-backupvol-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["podman", "run", "-d", "--name", name, testbed.IMAGE_REF, "sleep", "600"], check=True,
                   capture_output=True)
    try:
        yield name
    finally:
        testbed.remove_container(name)


def _in(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", name, *cmd], capture_output=True, text=True, check=False)


def test_the_volume_is_mounted_only_inside_the_block(container: str) -> None:
    volume = f"{container}-repo"
    try:
        source = Path(backup_volume.ensure_volume(volume))
        (source / "config").write_text("a restic repository's config\n")
        with backup_volume.repository_mounted(container, volume, "/srv/qnprov-backup-repo") as target:
            assert backup_volume.is_mounted(container, target)
            assert _in(container, "cat", f"{target}/config").stdout == "a restic repository's config\n"
            assert _in(container, "sh", "-c", f"echo snapshot > {target}/written-inside").returncode == 0
        assert not backup_volume.is_mounted(container, "/srv/qnprov-backup-repo")
        # What the host wrote went to the volume, not to the container's own disk.
        assert (source / "written-inside").read_text() == "snapshot\n"
        assert _in(container, "ls", "-A", "/srv/qnprov-backup-repo").stdout == ""
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, check=False)
