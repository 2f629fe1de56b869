"""A lab host's backup repository on a podman volume of its own, mounted only while it is used.

The repository must never live on the disk of the host it protects. The lab keeps it in a separate
podman volume and attaches that volume into the running container's mount namespace for the length
of a backup (``open_tree`` + ``setns`` + ``move_mount``, Linux 5.2+), then unmounts it again: between
backups the host cannot see, change or delete its snapshots.

Root only (CAP_SYS_ADMIN on the host), as the lab's podman is. The attach runs in a child process,
because ``setns`` into another mount namespace needs a single-threaded caller.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

from qnprov.errors import ExternalError

_ATTACH = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
source, pid, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC): a detached copy of the mount
tree = libc.syscall(428, -100, source.encode(), 1 | 0o2000000)
if tree < 0:
    sys.exit("open_tree %s: %s" % (source, os.strerror(ctypes.get_errno())))
namespace = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY)
if libc.setns(namespace, 0x20000) != 0:  # CLONE_NEWNS
    sys.exit("setns: %s" % os.strerror(ctypes.get_errno()))
os.makedirs(target, mode=0o700, exist_ok=True)
# move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)
if libc.syscall(429, tree, b"", -100, target.encode(), 4) != 0:
    sys.exit("move_mount %s: %s" % (target, os.strerror(ctypes.get_errno())))
"""


def _podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise ExternalError(f"podman {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def ensure_volume(volume: str) -> str:
    """The volume's directory on the host (created when missing)."""
    if subprocess.run(["podman", "volume", "exists", volume], check=False).returncode != 0:
        _podman("volume", "create", volume)
    return str(json.loads(_podman("volume", "inspect", volume))[0]["Mountpoint"])


def attach(container: str, volume: str, target: str) -> None:
    source = ensure_volume(volume)
    pid = _podman("inspect", "--format", "{{.State.Pid}}", container).strip()
    done = subprocess.run([sys.executable, "-c", _ATTACH, source, pid, target], capture_output=True, text=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        raise ExternalError(f"attaching volume {volume} at {container}:{target} failed: {done.stderr.strip()}")


def detach(container: str, target: str) -> None:
    pid = _podman("inspect", "--format", "{{.State.Pid}}", container).strip()
    done = subprocess.run(["nsenter", "-t", pid, "-m", "umount", target], capture_output=True, text=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        raise ExternalError(f"unmounting {container}:{target} failed: {done.stderr.strip()}")


def is_mounted(container: str, target: str) -> bool:
    mounts = _podman("exec", container, "cat", "/proc/mounts")
    return any(line.split()[1] == target for line in mounts.splitlines() if len(line.split()) > 1)


@contextlib.contextmanager
def repository_mounted(container: str, volume: str, target: str) -> Iterator[str]:
    """``volume`` mounted at ``target`` inside ``container`` for the ``with`` block only."""
    attach(container, volume, target)
    try:
        yield target
    finally:
        detach(container, target)
