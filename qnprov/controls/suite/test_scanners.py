"""External scanners: testssl.sh on every TLS endpoint, Lynis inside the host.

Marked ``scanner``: ``qnprov verify --no-scanners`` deselects them. The scans start
together in one session fixture (testssl runs in parallel with Lynis) so the whole
verify stays within its five-minute budget.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qnprov.controls import scanners
from qnprov.controls.probes import ProbeError
from qnprov.controls.target import SERVICES, STRICT_TLS_SERVICES, VerifyTarget

# All network probes and scans share one xdist worker, in file order: probes from one
# address must not overlap (anvil counts them together), and testssl's hundreds of
# connections must come after the probes, not during them.
pytestmark = pytest.mark.xdist_group("network")

TESTSSL_BUDGET = 240  # seconds per endpoint
PARALLEL_SCANS = max(2, os.cpu_count() or 2)
LYNIS_BUDGET = 280
LYNIS_REPORT = "/var/log/lynis-report.dat"


@dataclass
class Scans:
    testssl: dict[str, Future[scanners.TestsslResult]]
    lynis: Future[dict[str, Any]]


def _run_testssl(target: VerifyTarget, service: str, workdir: Path) -> scanners.TestsslResult:
    endpoint = target.endpoint(service)
    json_file = workdir / f"{service}.json"
    command = scanners.testssl_command(endpoint.host, endpoint.port, str(json_file), starttls=SERVICES[service][1],
                                       ca_file=target.ca_file, server_name=target.mail_hostname)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=TESTSSL_BUDGET, check=False)
    except subprocess.TimeoutExpired:
        result = scanners.TestsslResult(service, endpoint.address)
        result.scan_problems.append(f"testssl exceeded {TESTSSL_BUDGET}s")
        return result
    if not json_file.exists():
        result = scanners.TestsslResult(service, endpoint.address)
        result.scan_problems.append(f"testssl wrote no JSON (rc {completed.returncode}): {completed.stderr[-300:]}")
        return result
    return scanners.parse_testssl_json(json_file.read_text(encoding="utf-8"), service=service,
                                       address=endpoint.address)


def _run_lynis(host: Any) -> dict[str, Any]:
    if host.run("command -v lynis").rc != 0:
        raise ProbeError("lynis is not installed on the host (the os_hardening role installs it)")
    audit = host.run(f"timeout {LYNIS_BUDGET} lynis audit system --quick --no-colour")
    if audit.rc != 0:
        raise ProbeError(f"lynis exited {audit.rc}: {audit.stderr.strip()[-300:]}")
    report = host.run(f"cat {LYNIS_REPORT}")
    if report.rc != 0:
        raise ProbeError(f"cannot read {LYNIS_REPORT}")
    return scanners.parse_lynis_report(report.stdout)


@pytest.fixture(scope="module")
def scans(host: Any, target: VerifyTarget) -> Any:
    if shutil.which("testssl") is None:
        raise ProbeError("testssl (Debian package testssl.sh) is not installed on the verify machine")
    services = scanners.testssl_services(target.endpoints)
    with tempfile.TemporaryDirectory(prefix="qnprov-testssl-") as workdir, \
            ThreadPoolExecutor(max_workers=1) as lynis_pool, \
            ThreadPoolExecutor(max_workers=PARALLEL_SCANS) as pool:
        # testssl is CPU-bound here (bash + openssl per probe): more scans at once than cores
        # only thrashes (6 at once on 2 busy cores overran 240 s each). Lynis runs inside the
        # host meanwhile, on its own thread.
        lynis = lynis_pool.submit(_run_lynis, host)
        testssl = {s: pool.submit(_run_testssl, target, s, Path(workdir)) for s in services}
        yield Scans(testssl=testssl, lynis=lynis)


@pytest.mark.scanner
@pytest.mark.control("QN-OS-09")
def test_lynis_hardening_index(scans: Scans, record_property: Any) -> None:
    report = scans.lynis.result(timeout=LYNIS_BUDGET + 30)
    index = report["hardening_index"]
    if index is None:
        raise ProbeError(f"no hardening_index in {LYNIS_REPORT}")
    record_property("lynis_hardening_index", index)
    record_property("lynis_warnings", report["warnings"][:20])
    assert index >= scanners.LYNIS_MIN_HARDENING_INDEX, (
        f"Lynis hardening index {index} < {scanners.LYNIS_MIN_HARDENING_INDEX}; warnings: {report['warnings'][:10]}"
    )


def _accept(results: dict[str, scanners.TestsslResult], target: VerifyTarget, control: str,
            record_property: Any) -> dict[str, list[scanners.TestsslFinding]]:
    counted, waived = scanners.accept_findings(results, target.accepted_findings.get(control, {}))
    record_property("accepted_findings", waived)
    return counted


def _testssl_results(scans: Scans, record_property: Any | None = None) -> dict[str, scanners.TestsslResult]:
    waves = -(-len(scans.testssl) // PARALLEL_SCANS)  # queued scans wait for a free slot
    try:
        results = {service: future.result(timeout=TESTSSL_BUDGET * waves + 30)
                   for service, future in scans.testssl.items()}
    except TimeoutError as exc:
        raise ProbeError(f"testssl scans did not finish within {TESTSSL_BUDGET * waves + 30}s") from exc
    if record_property is not None:
        record_property("testssl", {service: result.summary() for service, result in results.items()})
        record_property("testssl_warnings", {s: r.warnings[:10] for s, r in results.items() if r.warnings})
    problems = {s: r.scan_problems for s, r in results.items() if r.scan_problems}
    if problems:
        raise ProbeError(f"testssl could not complete: {problems}")
    return results


@pytest.mark.scanner
@pytest.mark.control("QN-TLS-06")
def test_testssl_no_high_or_critical(scans: Scans, target: VerifyTarget, record_property: Any) -> None:
    results = _testssl_results(scans, record_property)
    counted = _accept(results, target, "QN-TLS-06", record_property)
    severe = {s: [f"{f.severity} {f.id}: {f.finding}" for f in found if f.severity in ("HIGH", "CRITICAL")]
              for s, found in counted.items()}
    severe = {s: found for s, found in severe.items() if found}
    assert not severe, f"testssl HIGH/CRITICAL findings: {severe}"


@pytest.mark.scanner
@pytest.mark.control("QN-TLS-07")
def test_testssl_no_medium_on_client_ports(scans: Scans, target: VerifyTarget, record_property: Any) -> None:
    results = _testssl_results(scans)
    strict = [s for s in results if s in STRICT_TLS_SERVICES]
    assert strict, "none of 465, 587, 993 was scanned"
    counted = _accept({s: results[s] for s in strict}, target, "QN-TLS-07", record_property)
    medium = {s: [f"{f.id}: {f.finding}" for f in counted[s] if f.severity == "MEDIUM"] for s in strict}
    medium = {s: found for s, found in medium.items() if found}
    assert not medium, f"testssl MEDIUM findings on client ports: {medium}"
