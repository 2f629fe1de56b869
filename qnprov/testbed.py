"""The testbed: podman on the host and a local Debian 12 systemd base image.

No image registry is reachable, so the base image is built locally with
debootstrap and imported into podman. Everything here is idempotent: host
configuration is rewritten only when it differs, and the image is rebuilt only
when no image carries the current ``IMAGE_VERSION`` label.
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


def _run(cmd: Sequence[str], *, check: bool = True, input: str | None = None,
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


def missing_packages(packages: Sequence[str], *, run: Run = _run) -> list[str]:
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


def prepare_host(*, run: Run = _run, apt: bool = True) -> HostReport:
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


def image_version(ref: str = IMAGE_REF, *, run: Run = _run) -> str | None:
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


def build_image(*, force: bool = False, run: Run = _run, progress: Callable[[str], None] = lambda _: None,
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


def remove_container(name: str, *, run: Run = _run, attempts: int = 3) -> None:
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


def wait_for_systemd(name: str, *, timeout: float = 90.0, run: Run = _run) -> str:
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


# ----------------------------------------------------------------------------- the fresh-machine stage
#
# `make test` runs scripts/bootstrap.sh inside a pristine container made from the base
# image above, then lint and every test directory that needs no container. A package or
# tool that bootstrap forgot to install then fails the stage on any machine, however much
# an earlier run left installed on the host.

#: tests/ subdirectories whose tests need containers (the lab, molecule, podman itself).
#: Every other test directory runs in the fresh-machine stage, new ones included.
CONTAINER_TEST_DIRS = frozenset({"integration", "testbed"})
FRESH_PREFIX = "qnprov-fresh-"
#: Where the tree is unpacked inside the container (root's home, as a clone would be).
FRESH_WORKDIR = "/root/qnprov"
FRESH_REPORTS = "/root/qnprov-reports"
#: pytest's exit status when it collected or selected no tests.
PYTEST_NO_TESTS = 5


@dataclass(frozen=True)
class FreshStep:
    """One command the fresh-machine stage runs inside the container, in the tree."""

    name: str
    argv: tuple[str, ...]
    #: The only step that may reach the network: apt and PyPI. The container is taken
    #: off its network after it, so lint and tests have loopback only.
    network: bool = False
    #: A pytest run: its JUnit report path inside the container.
    junit: str | None = None


@dataclass(frozen=True)
class JunitCounts:
    tests: int
    failures: int
    errors: int
    skipped: int

    @property
    def ran(self) -> int:
        return self.tests - self.skipped

    @property
    def passed(self) -> int:
        return self.tests - self.skipped - self.failures - self.errors


@dataclass
class StepResult:
    step: FreshStep
    rc: int | None  # None: not run
    seconds: float = 0.0
    counts: JunitCounts | None = None
    verdict: str = "not run"

    @property
    def ok(self) -> bool:
        return self.verdict == "passed"


def tracked_files(root: Path = paths.PROJECT_ROOT, *, run: Run = _run) -> list[str]:
    """The files git tracks, as they are in the working tree (deleted ones left out).

    Untracked files (a venv, state, a developer's scratch) never reach the container;
    uncommitted edits to tracked files do, so a developer tests what they have. A CI
    clone has no such edits, so there it is exactly HEAD.
    """
    proc = run(["git", "-C", str(root), "ls-files", "-z", "--cached"])
    return [f for f in proc.stdout.split("\0") if f and os.path.lexists(root / f)]


def fresh_test_dirs(files: Sequence[str]) -> list[str]:
    """The test directories the stage runs: every ``tests/<dir>`` with a tracked
    ``test_*.py`` module, except the ones that need containers."""
    dirs = set()
    for name in files:
        parts = name.split("/")
        if len(parts) >= 3 and parts[0] == "tests" and parts[1] not in CONTAINER_TEST_DIRS \
                and parts[-1].startswith("test_") and parts[-1].endswith(".py"):
            dirs.add(f"tests/{parts[1]}")
    return sorted(dirs)


def fresh_steps(test_dirs: Sequence[str]) -> list[FreshStep]:
    """Bootstrap (the only step with network), lint, then one pytest run per directory."""
    steps = [FreshStep("bootstrap", ("./scripts/bootstrap.sh",), network=True),
             FreshStep("lint", ("make", "lint"))]
    for directory in test_dirs:
        junit = f"{FRESH_REPORTS}/{directory.replace('/', '-')}.xml"
        steps.append(FreshStep(directory, (".venv/bin/pytest", "-p", "no:cacheprovider", "--junitxml", junit,
                                           directory), junit=junit))
    return steps


def junit_counts(xml_text: str) -> JunitCounts:
    """Totals of a pytest JUnit report (one or several <testsuite> elements)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml_text)  # noqa: S314 - our own pytest's report, read back from our container
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = [0, 0, 0, 0]
    for suite in suites:
        for i, key in enumerate(("tests", "failures", "errors", "skipped")):
            totals[i] += int(suite.get(key, "0"))
    return JunitCounts(*totals)


def step_verdict(step: FreshStep, rc: int, counts: JunitCounts | None = None) -> str:
    """"passed", or why the step failed. A pytest run that ran no test has failed:
    exit 5 (nothing collected or selected), or every test skipped."""
    if step.junit is not None:
        if rc == PYTEST_NO_TESTS:
            return "FAILED: pytest collected no tests (exit 5)"
        if rc == 0 and counts is None:
            return "FAILED: pytest wrote no JUnit report"
        if rc == 0 and counts is not None and counts.ran == 0:
            return f"FAILED: all {counts.tests} tests skipped, none ran"
    return "passed" if rc == 0 else f"FAILED (exit {rc})"


def only_loopback(interfaces: Sequence[str]) -> bool:
    return list(interfaces) == ["lo"]


def format_fresh_summary(results: Sequence[StepResult], *, setup_seconds: float, total_seconds: float) -> str:
    """The table printed at the end of the stage."""
    lines = ["fresh-machine stage summary:"]
    lines.append(f"  {'container setup':<22} {setup_seconds:7.1f}s  image, container, tree copy")
    for result in results:
        detail = ""
        if result.counts is not None:
            c = result.counts
            detail = f"  {c.passed} passed, {c.failures} failed, {c.errors} errors, {c.skipped} skipped"
        timing = f"{result.seconds:7.1f}s" if result.rc is not None else "      - "
        lines.append(f"  {result.step.name:<22} {timing}  {result.verdict}{detail}")
    ok = all(r.ok for r in results) and bool(results)
    lines.append(f"  {'total':<22} {total_seconds:7.1f}s  {'PASSED' if ok else 'FAILED'}")
    return "\n".join(lines)


def copy_tree(name: str, root: Path, files: Sequence[str], workdir: str = FRESH_WORKDIR) -> None:
    """Stream the given files of ``root`` into the container at ``workdir``."""
    subprocess.run(["podman", "exec", name, "mkdir", "-p", workdir], check=True, capture_output=True)
    tar = subprocess.Popen(["tar", "-C", str(root), "--null", "-T", "-", "-c", "-f", "-"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert tar.stdin is not None
    try:
        extract = subprocess.Popen(["podman", "exec", "-i", name, "tar", "-x", "--no-same-owner", "-C", workdir,
                                    "-f", "-"], stdin=tar.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if tar.stdout:
            tar.stdout.close()
        tar.stdin.write(b"\0".join(f.encode() for f in files) + b"\0")
        tar.stdin.close()
        _, err = extract.communicate(timeout=600)
    finally:
        tar_rc = tar.wait(timeout=600)
    if tar_rc != 0 or extract.returncode != 0:
        raise ExternalError(f"copying the tree into {name} failed: {err.decode(errors='replace')[-400:]}")


def _exec(name: str, argv: Sequence[str], *, workdir: str = FRESH_WORKDIR, capture: bool = False,
          timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["podman", "exec", "-w", workdir, "-e", f"QNPROV_STATE_DIR={FRESH_WORKDIR}-state", name, *argv]
    return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, check=False)


def run_fresh_stage(root: Path = paths.PROJECT_ROOT, *, image: str = IMAGE_REF, keep: bool = False,
                    out: Callable[[str], None] = print) -> list[StepResult]:
    """Run the fresh-machine stage; return each step's result. The container is always removed
    (unless ``keep``, for debugging a failure)."""
    started = time.monotonic()
    prepare_host()
    if build_image(progress=lambda msg: out(f"fresh stage: {msg}")):
        out("fresh stage: built the base image")
    files = tracked_files(root)
    test_dirs = fresh_test_dirs(files)
    if not test_dirs:
        raise ExternalError("the fresh-machine stage found no test directory to run")
    results = [StepResult(step, None) for step in fresh_steps(test_dirs)]
    name = f"{FRESH_PREFIX}{os.urandom(4).hex()}"
    out(f"fresh stage: container {name} from {image}; {len(files)} tracked files; tests: {' '.join(test_dirs)}")
    try:
        _run(systemd_run_args(name, image=image), timeout=120)
        wait_for_systemd(name)
        copy_tree(name, root, files)
        trusted = share_host_trust(name)
        if trusted:
            out(f"fresh stage: the container trusts the host's local CA certificates: {', '.join(trusted)}")
        setup_seconds = time.monotonic() - started
        isolated = False
        for result in results:
            step = result.step
            if not step.network and not isolated:
                isolate_network(name)
                isolated = True
                out("fresh stage: the container is off the network now; loopback only")
            out(f"\n===== fresh stage: {step.name}: {' '.join(step.argv)}")
            t0 = time.monotonic()
            proc = _exec(name, step.argv)
            result.seconds = time.monotonic() - t0
            result.rc = proc.returncode
            if step.junit is not None:
                report = _exec(name, ["cat", step.junit], capture=True)
                result.counts = junit_counts(report.stdout) if report.returncode == 0 else None
            result.verdict = step_verdict(step, proc.returncode, result.counts)
            out(f"===== fresh stage: {step.name}: {result.verdict} in {result.seconds:.1f}s")
            if step.name == "bootstrap" and not result.ok:
                break  # nothing else can run on a machine bootstrap could not install
        out("\n" + format_fresh_summary(results, setup_seconds=setup_seconds,
                                        total_seconds=time.monotonic() - started))
    finally:
        if keep:
            out(f"fresh stage: container {name} kept (remove it with: podman rm -f {name})")
        else:
            remove_container(name)
    return results


#: Certificates the machine's administrator added to the host's trust store.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
#: pip's site configuration in the container when the host has local CAs: trust the system
#: bundle (pip otherwise trusts only its own copy of certifi's).
FRESH_PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"


def share_host_trust(name: str, ca_dir: Path = LOCAL_CA_DIR) -> list[str]:
    """Give the container the host's network trust, as podman gives it the host's resolv.conf.

    Where outbound TLS passes through a gateway with its own CA (as on the machines CI
    runs on), a fresh machine on that network has that CA installed by its administrator;
    without it, bootstrap cannot reach PyPI. Only the certificates cross over, and pip is
    told to use the system bundle. No pip index, wheel directory or constraint of the
    host crosses over, so bootstrap still has to install, and build, everything itself.
    Returns the certificates shared.
    """
    certs = sorted(str(p.relative_to(ca_dir)) for p in ca_dir.rglob("*.crt") if p.is_file()) \
        if ca_dir.is_dir() else []
    if not certs:
        return []
    copy_tree(name, ca_dir, certs, workdir=str(LOCAL_CA_DIR))
    _run(["podman", "exec", name, "update-ca-certificates"], timeout=120)
    _run(["podman", "exec", "-i", name, "sh", "-c", "cat > /etc/pip.conf"], input=FRESH_PIP_CONF)
    return certs


def isolate_network(name: str) -> None:
    """Take the container off every network, so only loopback is left; check that it is."""
    nets = _run(["podman", "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                 name]).stdout.split()
    for net in nets:
        _run(["podman", "network", "disconnect", net, name])
    interfaces = _exec(name, ["ls", "/sys/class/net"], workdir="/", capture=True).stdout.split()
    if not only_loopback(interfaces):
        raise ExternalError(f"{name} still has network interfaces besides loopback: {interfaces}")
