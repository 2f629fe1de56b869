"""The lab's backup repository volume is in a running container only while it is attached."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qnprov_testing import backup_volume
from qnprov_testing.containers import exec_in, plain_container


@pytest.fixture()
def container() -> Iterator[str]:
    with plain_container("qnprov-backupvol-test-") as name:
        yield name


_in = exec_in


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
