"""The testbed: podman on the host and a local Debian 12 systemd base image.

No image registry is reachable, so the base image is built locally with
debootstrap and imported into podman. Everything here is idempotent: host
configuration is rewritten only when it differs, and the image is rebuilt only
when no image carries the current ``IMAGE_VERSION`` label.

The fresh-machine stage of `make test`, which runs in a container made from this
image, is :mod:`qnprov.freshstage`; the lab's containers are :mod:`qnprov.lab`.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from qnprov import paths
from qnprov.errors import ExternalError

#: Bump when the image contents below change; old images are then rebuilt.
IMAGE_VERSION = "4"
IMAGE_NAME = "localhost/qnprov-debian"
IMAGE_TAG = "bookworm"
IMAGE_REF = f"{IMAGE_NAME}:{IMAGE_TAG}"
IMAGE_LABEL = "org.qnprov.image-version"

#: openssh-client: the lab is reached over SSH (ssh, ssh-keygen for the lab key).
HOST_PACKAGES = ("podman", "runc", "debootstrap", "uidmap", "slirp4netns", "fuse-overlayfs", "openssh-client")
#: Packages baked into the base image: what Ansible and systemd need, nothing
#: of the mail stack (the roles install that, so converge is measured honestly).
IMAGE_PACKAGES = (
    "python3",
    "python3-apt",
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "debconf-utils",
    "ca-certificates",
    "apt-utils",
    "procps",
    "less",
)
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
#: What podman needs on these hosts (hybrid cgroups, PID 1 not systemd):
#: crun fails in hybrid mode, and containers fail to start without explicit
#: ulimits (nproc may not exceed 4096).
CONTAINERS_SETTINGS: dict[str, dict[str, str]] = {
    "containers": {"default_ulimits": '["nofile=20000:20000", "nproc=4096:4096"]'},
    "engine": {"runtime": '"runc"', "cgroup_manager": '"cgroupfs"', "events_logger": '"file"'},
}
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Run = Callable[..., subprocess.CompletedProcess[str]]


def run_command(cmd: Sequence[str], *, check: bool = True, input: str | None = None,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=timeout)
    except FileNotFoundError as exc:
        raise ExternalError(f"{cmd[0]} is not installed (run `make bootstrap` first)") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ExternalError(f"`{' '.join(cmd[:4])} ...` failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


@dataclass(frozen=True)
class HostReport:
    """What ``prepare_host`` found and changed."""

    installed: tuple[str, ...]
    config_changed: bool
    cgroup_volume: str | None


def missing_packages(packages: Sequence[str], *, run: Run = run_command) -> list[str]:
    """Return the Debian packages in ``packages`` that are not installed."""
    proc = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *packages], check=False)
    installed = {line.split()[0] for line in proc.stdout.splitlines() if line.split()[1:2] == ["ii"]}
    return [p for p in packages if p not in installed]


def render_containers_conf(current: str) -> str:
    """Merge qnprov's podman settings into an existing containers.conf text.

    Keys we do not manage are kept as they are; ours are set or replaced.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(current)
    for section, values in CONTAINERS_SETTINGS.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, value)
    lines = ["# Managed by qnprov (qnprov/testbed.py): runc, explicit ulimits, cgroupfs.\n"]
    for section in parser.sections():
        lines.append(f"[{section}]\n")
        lines.extend(f"{k} = {v}\n" for k, v in parser.items(section))
        lines.append("\n")
    return "".join(lines)


def cgroup_volume() -> str | None:
    """The cgroup mount systemd containers need on this host, if any.

    On hybrid hosts the v2 hierarchy lives at /sys/fs/cgroup/unified; without it
    systemd inside the container never hears "cgroup empty", and restarts stall.
    """
    unified = Path("/sys/fs/cgroup/unified")
    if unified.is_dir() and os.path.ismount(unified):
        return f"{unified}:{unified}:rw"
    return None


def prepare_host(*, run: Run = run_command, apt: bool = True) -> HostReport:
    """Install and configure podman for systemd containers. Idempotent."""
    missing = missing_packages(HOST_PACKAGES, run=run) if apt else []
    if missing:
        env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
        run([*env_cmd, "apt-get", "update", "-qq"], timeout=600)
        run([*env_cmd, "apt-get", "install", "-y", "-qq", *missing], timeout=1800)
    current = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else ""
    wanted = render_containers_conf(current)
    changed = wanted != current
    if changed:
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        tmp = CONTAINERS_CONF.with_suffix(".qnprov-tmp")
        tmp.write_text(wanted)
        tmp.replace(CONTAINERS_CONF)
    return HostReport(tuple(missing), changed, cgroup_volume())


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line format)."""
    candidates = [*sorted(sources_dir.glob("sources.list.d/*.sources")), sources_dir / "sources.list"]
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if re.search(r"/debian/?$", match.group(1)):
                return match.group(1).rstrip("/")
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            if re.search(r"/debian/?$", match.group(1)):
                return match.group(1).rstrip("/")
    return DEFAULT_MIRROR


def image_version(ref: str = IMAGE_REF, *, run: Run = run_command) -> str | None:
    """The qnprov version label of an existing image, or None if absent."""
    proc = run(["podman", "image", "inspect", "--format", f'{{{{index .Labels "{IMAGE_LABEL}"}}}}', ref],
               check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or ""


def _apt_sources(mirror: str) -> str:
    """/etc/apt/sources.list as Debian 12's installer writes it (one-line format).

    A lab host should look like a freshly installed one: audit tools such as Lynis
    3.0.8 (PKGS-7388) read only this format when they look for the security suite.
    """
    security = re.sub(r"/debian$", "/debian-security", mirror)
    return (
        f"deb {mirror} bookworm main\n"
        f"deb {mirror} bookworm-updates main\n"
        f"deb {security} bookworm-security main\n"
    )


def build_image(*, force: bool = False, run: Run = run_command, progress: Callable[[str], None] = lambda _: None,
                ) -> bool:
    """Build the base image unless one with the current version exists.

    Returns True when an image was built.
    """
    if not force and image_version(run=run) == IMAGE_VERSION:
        return False
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="qnprov-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap bookworm from {mirror}")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}",
             "bookworm", str(rootfs), mirror], timeout=1800)
        (rootfs / "etc/apt/sources.list").write_text(_apt_sources(mirror))
        (rootfs / "etc/apt/sources.list.d/debian.sources").unlink(missing_ok=True)
        # Containers have no console to log in on; and a fixed machine-id would be
        # shared by every container, so let systemd create one at boot.
        (rootfs / "etc/machine-id").write_text("")
        for unit in ("getty@tty1.service", "console-getty.service", "systemd-logind.service"):
            link = rootfs / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        for cache in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            cache.unlink()
        progress("importing into podman")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            proc = subprocess.run(
                ["podman", "import", "--change", f"LABEL {IMAGE_LABEL}={IMAGE_VERSION}",
                 "--change", "CMD /sbin/init", "--change", "STOPSIGNAL SIGRTMIN+3", "-", IMAGE_REF],
                stdin=tar.stdout, capture_output=True, text=True, timeout=900)
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait()
        if proc.returncode != 0:
            raise ExternalError(f"podman import failed: {proc.stderr.strip()[-400:]}")
    return True


#: The os_hardening defaults whose kernel network parameters a container gets.
OS_HARDENING_DEFAULTS = paths.ROLES_DIR / "os_hardening" / "defaults" / "main.yml"


def container_net_sysctls(defaults_file: Path = OS_HARDENING_DEFAULTS) -> dict[str, int]:
    """The os_hardening role's per-network-namespace sysctls (``net.ipv4.*``, ``net.ipv6.*``).

    podman mounts /proc/sys read-only, so inside a container the role records
    these in its sysctl.d file but cannot apply them. They belong to the
    container's own network namespace, which takes them from ``podman run
    --sysctl`` at creation, as a real host applies the file at boot. The
    ``net.core.*`` keys the role sets are global, not per namespace: left out.
    """
    defaults = yaml.safe_load(defaults_file.read_text()) or {}
    settings = defaults.get("os_hardening_sysctl_settings") or {}
    return {key: int(value) for key, value in settings.items()
            if key.startswith(("net.ipv4.", "net.ipv6."))}


def _own_network_namespace(network: str | None) -> bool:
    return network is None or not network.startswith(("container:", "host", "ns:", "none"))


def systemd_run_args(name: str, *, image: str = IMAGE_REF, hostname: str | None = None,
                     publish: Sequence[str] = (), network: str | None = None,
                     extra: Sequence[str] = (), sysctls: Mapping[str, int] | None = None) -> list[str]:
    """The ``podman run`` command line for a systemd host container.

    ``sysctls`` are set in the container's network namespace; ``None`` means the
    os_hardening role's (``container_net_sysctls``) whenever the container has a
    network namespace of its own, ``{}`` none.
    """
    # NET_ADMIN: a host manages its own nftables firewall, as a real one does.
    args = ["podman", "run", "-d", "--name", name, "--systemd=always", "--cap-add=NET_ADMIN",
            "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/run/lock"]  # noqa: S108 - inside the container
    volume = cgroup_volume()
    if volume:
        args += ["-v", volume]
    if hostname:
        args += ["--hostname", hostname]
    if network:
        args += ["--network", network]
    if sysctls is None:
        sysctls = container_net_sysctls() if _own_network_namespace(network) else {}
    for key, value in sorted(sysctls.items()):
        args += ["--sysctl", f"{key}={value}"]
    for spec in publish:
        args += ["-p", spec]
    args += [*extra, image, "/sbin/init"]
    return args


def remove_container(name: str, *, run: Run = run_command, attempts: int = 3) -> None:
    """Remove a container whatever its state (stale ones are left by earlier runs).

    When conmon died with the container, the first ``podman rm -f`` times out
    waiting for the exit file conmon would have written and fails; podman has
    marked the container stopped by then, so a second attempt removes it.
    """
    for _ in range(attempts):
        run(["podman", "rm", "-f", "-t", "5", name], check=False)
        if run(["podman", "container", "exists", name], check=False).returncode != 0:
            return
    raise ExternalError(f"podman could not remove container {name} after {attempts} attempts")


def wait_for_systemd(name: str, *, timeout: float = 90.0, run: Run = run_command) -> str:
    """Wait until systemd in the container has finished booting; return its state.

    Right after ``podman run`` the container's D-Bus socket may not exist yet,
    so "cannot connect to the bus" means "ask again", not failure.
    """
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        left = max(1, int(deadline - time.monotonic()))
        proc = run(["podman", "exec", name, "timeout", str(left), "systemctl", "is-system-running", "--wait"],
                   check=False, timeout=left + 10)
        state = proc.stdout.strip() or proc.stderr.strip()
        if state in {"running", "degraded"}:
            return state
        if state not in {"starting", "initializing"} and "bus" not in state.lower():
            break
        time.sleep(0.3)
    raise ExternalError(f"systemd in {name} did not come up: {state!r}")


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None
