"""``qnprov verify``: run the packaged suite on every inventory host, keyed by control.

I/O edge: builds one :class:`VerifyTarget` per host (lab inventories from the lab's
own config, others from their host variables through :mod:`qnprov.inventory`), runs pytest in a subprocess with
the collector plugin, and aggregates with :func:`qnprov.controls.results.aggregate`.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qnprov import inventory as inventory_mod
from qnprov.controls.catalogue import Catalogue, load_catalogue
from qnprov.controls.results import TestOutcome, VerifyReport, aggregate
from qnprov.controls.target import (
    BASELINE_TCP_PORTS,
    SERVICES,
    Endpoint,
    VerifyTarget,
    parse_endpoint,
    probe_recipient,
)
from qnprov.controls.waivers import WaiverSet
from qnprov.errors import ConfigError, ExternalError

SUITE_DIR = Path(__file__).resolve().parent / "suite"
#: Upper bounds for one host's suite run (seconds).
SUITE_TIMEOUT = 180
SUITE_TIMEOUT_WITH_SCANNERS = 600
#: pytest-xdist workers per host run. One: the checks share one batched fact read per session
#: (see suite/conftest.py Facts), and extra workers would each repeat it (measured slower).
SUITE_WORKERS = 1
#: Where verify leaves its last results for ``qnprov report traceability``.
DEFAULT_RESULTS_FILE = Path(".qnprov/last-verify.json")
#: Ports of the services the lab may publish beyond the baseline allowlist.
_LAB_ENDPOINT_ALIASES = {"ldap": "ldaps", "smtps": "submissions", "managesieve": "sieve"}


@dataclass(frozen=True)
class SuiteRun:
    outcomes: list[TestOutcome]
    seconds: float
    returncode: int
    output_tail: str


# ----------------------------------------------------------------------------- targets


def lab_targets(inventory: Path) -> list[VerifyTarget]:
    """Targets for a lab inventory: podman backends, loopback-published endpoints, lab CA."""
    from qnprov import lab

    return lab_config_targets(lab.load_lab_config(inventory))


def lab_config_targets(config: Any) -> list[VerifyTarget]:
    """Targets for a ``qnprov.lab.LabConfig`` (also a molecule host via ``lab.with_port_base``)."""
    group_vars = inventory_mod.load(config.inventory).literal_group_vars("all")
    hosted = [str(d) for d in group_vars.get("qnprov_hosted_domains") or [config.domain]]
    return [lab_target(host.name, host.container, host.hostname, host.publish, domain=config.domain,
                       hosted_domains=hosted, ca_file=str(config.ca_cert),
                       # Never a demo account: a roster import may disable those (issue 9).
                       recipient=probe_recipient(group_vars, config.domain),
                       ldap_base_dn=config.base_dn)
            for host in config.hosts]


def lab_target(name: str, container: str, hostname: str, publish: dict[str, tuple[int, int]], *, domain: str,
               hosted_domains: list[str], ca_file: str | None, recipient: str | None,
               ldap_base_dn: str | None = None) -> VerifyTarget:
    endpoints: dict[str, Endpoint] = {}
    extra_ports: set[int] = set()
    for raw_name, (host_port, container_port) in publish.items():
        service = _LAB_ENDPOINT_ALIASES.get(raw_name, raw_name)
        if service not in SERVICES:
            continue
        endpoints[service] = Endpoint(host="127.0.0.1", port=host_port)
        if container_port not in BASELINE_TCP_PORTS:
            # The lab publishes this port on purpose (to probe it): a declared exception.
            extra_ports.add(container_port)
    return VerifyTarget(name=name, backend=f"podman://{container}", lab=True, mail_hostname=hostname,
                        domain=domain, hosted_domains=hosted_domains, endpoints=endpoints, ca_file=ca_file,
                        probe_recipient=recipient, extra_tcp_ports=sorted(extra_ports), ldap_base_dn=ldap_base_dn)


def remote_target(name: str, hostvars: dict[str, Any]) -> VerifyTarget:
    """A real host: ssh backend; probes go to the host's own public ports only."""
    domain = str(hostvars.get("qnprov_domain") or "")
    if not domain:
        raise ConfigError(f"host {name}: qnprov_domain is not set")
    address = str(hostvars.get("ansible_host") or name)
    user = str(hostvars.get("ansible_user") or "")
    port = hostvars.get("ansible_port")
    backend = f"ssh://{user + '@' if user else ''}{address}{':' + str(port) if port else ''}"
    declared = hostvars.get("qnprov_verify_endpoints")
    if isinstance(declared, dict):
        endpoints = {service: parse_endpoint(value, default_host=address) for service, value in declared.items()}
    else:
        # The ports a production host exposes; no plaintext IMAP, no LDAP.
        endpoints = {service: Endpoint(host=address, port=SERVICES[service][0])
                     for service in ("smtp", "submission", "submissions", "imaps", "sieve")}
    unknown = sorted(set(endpoints) - set(SERVICES))
    if unknown:
        raise ConfigError(f"host {name}: unknown services in qnprov_verify_endpoints: {unknown}")
    hostname = str(hostvars.get("qnprov_mail_hostname") or (name if "." in name else f"{name}.{domain}"))
    return VerifyTarget(
        name=name, backend=backend, sudo=bool(user) and user != "root", mail_hostname=hostname, domain=domain,
        hosted_domains=[str(d) for d in hostvars.get("qnprov_hosted_domains") or [domain]],
        endpoints=endpoints, ca_file=hostvars.get("qnprov_verify_ca_file"),
        probe_recipient=probe_recipient(hostvars, domain),
        extra_tcp_ports=[int(p) for p in hostvars.get("qnprov_verify_extra_tcp_ports") or []],
        dkim_selector=hostvars.get("rspamd_dkim_selector"),
        ldap_base_dn=hostvars.get("qnprov_ldap_base_dn"),
    )


def build_targets(inventory: Path) -> list[VerifyTarget]:
    parsed = inventory_mod.load(inventory)
    if parsed.is_lab:
        try:
            return lab_targets(inventory)
        except (KeyError, OSError) as exc:
            raise ConfigError(f"lab inventory {inventory} is incomplete: {exc}") from exc
    if not parsed.hosts:
        raise ConfigError(f"inventory {inventory} has no hosts")
    try:
        return [remote_target(name, parsed.literal_vars(name)) for name in parsed.hosts]
    except ValidationError as exc:
        raise ConfigError(f"inventory {inventory}: {exc.errors()[0]['msg']}") from exc


# ----------------------------------------------------------------------------- running


def suite_command(target_file: Path, results_file: Path, ini_file: Path, *, backend: str, sudo: bool,
                  scanners: bool, suite_dir: Path = SUITE_DIR, workers: int = SUITE_WORKERS) -> list[str]:
    command = [
        sys.executable, "-m", "pytest", str(suite_dir),
        "-c", str(ini_file), "--rootdir", str(suite_dir), "--confcutdir", str(suite_dir),
        "-p", "qnprov.controls.collector", "-p", "no:cacheprovider",
        "--qnprov-results", str(results_file), "--qnprov-target", str(target_file),
        "--hosts", backend, "-q", "--no-header", "-rN", "--tb=short",
    ]
    if sudo:
        command.append("--sudo")
    if workers > 1:
        # Host-state checks spread over workers; the "network" group keeps probes and scans
        # together, in order, on one of them.
        command += ["-n", str(workers), "--dist", "loadgroup"]
    if not scanners:
        command += ["-m", "not scanner"]
    return command


def run_suite(target: VerifyTarget, *, scanners: bool, suite_dir: Path = SUITE_DIR,
              timeout: float | None = None, workers: int = SUITE_WORKERS) -> SuiteRun:
    """Run the suite against one host; return its per-test outcomes."""
    budget = timeout or (SUITE_TIMEOUT_WITH_SCANNERS if scanners else SUITE_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="qnprov-verify-") as tmp:
        workdir = Path(tmp)
        target_file, results_file, ini_file = workdir / "target.json", workdir / "results.json", workdir / "pytest.ini"
        target.write(target_file)
        ini_file.write_text("[pytest]\n", encoding="utf-8")
        command = suite_command(target_file, results_file, ini_file, backend=target.backend, sudo=target.sudo,
                                scanners=scanners, suite_dir=suite_dir, workers=workers)
        started = time.monotonic()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=budget, check=False,
                                  cwd=workdir)
        except subprocess.TimeoutExpired as exc:
            raise ExternalError(f"the control suite on {target.name} exceeded {budget:.0f}s") from exc
        seconds = time.monotonic() - started
        if not results_file.exists():
            raise ExternalError(f"the control suite on {target.name} produced no results "
                                f"(pytest exit {proc.returncode}): {(proc.stdout + proc.stderr)[-800:]}")
        raw = json.loads(results_file.read_text(encoding="utf-8"))
    outcomes = [TestOutcome.model_validate(record) for record in raw]
    return SuiteRun(outcomes, seconds, proc.returncode, (proc.stdout + proc.stderr)[-2000:])


def scanner_tests(catalogue: Catalogue) -> frozenset[str]:
    """Suite tests marked ``scanner`` (by convention they live in test_scanners.py)."""
    return frozenset(test for control in catalogue.controls for test in control.tests
                     if test.startswith("test_scanners.py::"))


def verify(targets: list[VerifyTarget], *, waivers: WaiverSet, scanners: bool, inventory: str = "",
           catalogue: Catalogue | None = None, today: dt.date | None = None) -> VerifyReport:
    catalogue = catalogue or load_catalogue()
    outcomes: dict[str, list[TestOutcome]] = {}
    durations: dict[str, float] = {}
    day = today or dt.datetime.now(dt.UTC).date()
    for target in targets:
        target = target.model_copy(update={"accepted_findings": waivers.accepted_findings(target.name, day)})
        run = run_suite(target, scanners=scanners)
        outcomes[target.name] = run.outcomes
        durations[target.name] = round(run.seconds, 1)
    now = dt.datetime.now(dt.UTC)
    report = aggregate(catalogue, outcomes, waivers, today=today or now.date(), scanners_ran=scanners,
                       scanner_tests=scanner_tests(catalogue), inventory=inventory,
                       generated_at=now.isoformat(timespec="seconds"))
    return report.model_copy(update={"durations": durations})


def write_results_file(report: VerifyReport, path: Path) -> None:
    """Keep the full report (hosts, tests, evidence) for traceability; no secrets are in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.model_dump_json(indent=1), encoding="utf-8")


def read_results_file(path: Path) -> VerifyReport:
    try:
        return VerifyReport.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read verify results {path}: {exc.strerror}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a verify results file: {exc.errors()[0]['msg']}") from exc


def verify_lab_config(config: Any, *, scanners: bool, waivers: WaiverSet | None = None) -> VerifyReport:
    """verify for a ``qnprov.lab.LabConfig``: what molecule's verify step calls for its host."""
    return verify(lab_config_targets(config), waivers=waivers or WaiverSet(), scanners=scanners,
                  inventory=str(config.inventory))
