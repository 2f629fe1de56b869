"""The fresh-machine stage of `make test` (``scripts/fresh-stage.py``).

`make test` runs scripts/bootstrap.sh inside a pristine container made from the testbed's
base image (:mod:`qnprov.testbed`), then lint and every test directory that needs no
container. A package or tool that bootstrap forgot to install then fails the stage on any
machine, however much an earlier run left installed on the host.

The pure parts (which directories run, how a pytest run is judged, the summary) are
separate from the podman ones (copying the tree in, taking the container off the network).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qnprov import paths
from qnprov.errors import ExternalError
from qnprov.testbed import (
    IMAGE_REF,
    Run,
    build_image,
    prepare_host,
    remove_container,
    run_command,
    systemd_run_args,
    wait_for_systemd,
)

#: tests/ subdirectories whose tests need containers (the lab, lab-ha, molecule, podman itself).
#: Every other test directory runs in the fresh-machine stage, new ones included.
CONTAINER_TEST_DIRS = frozenset({"integration", "testbed", "labha"})
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


def tracked_files(root: Path = paths.PROJECT_ROOT, *, run: Run = run_command) -> list[str]:
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
        run_command(systemd_run_args(name, image=image), timeout=120)
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
    run_command(["podman", "exec", name, "update-ca-certificates"], timeout=120)
    run_command(["podman", "exec", "-i", name, "sh", "-c", "cat > /etc/pip.conf"], input=FRESH_PIP_CONF)
    return certs


def isolate_network(name: str) -> None:
    """Take the container off every network, so only loopback is left; check that it is."""
    nets = run_command(["podman", "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                 name]).stdout.split()
    for net in nets:
        run_command(["podman", "network", "disconnect", net, name])
    interfaces = _exec(name, ["ls", "/sys/class/net"], workdir="/", capture=True).stdout.split()
    if not only_loopback(interfaces):
        raise ExternalError(f"{name} still has network interfaces besides loopback: {interfaces}")
