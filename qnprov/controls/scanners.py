"""testssl.sh and Lynis: command lines and the parsing of their results (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from qnprov.controls.target import SERVICES

#: testssl severities, weakest first.
SEVERITIES = ("OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
#: The testssl checks verify runs: protocols, cipher categories, forward secrecy, server
#: preference, server defaults (certificate), vulnerabilities. These carry every rated
#: finding; the per-cipher enumeration (-E) and client simulations (-c) of a default run
#: are informational and took over 4 minutes per endpoint on a loaded 2-core machine
#: (about 50 s with this selection).
TESTSSL_CHECKS = ("-p", "-s", "-f", "-P", "-S", "-U")
#: STARTTLS protocols testssl.sh 3.0 (Debian 12) speaks; it has no ManageSieve support,
#: so port 4190 is covered by the suite's own handshake probes (QN-TLS-04/05) instead.
TESTSSL_STARTTLS = frozenset({"smtp", "imap", "pop3", "ftp", "ldap", "lmtp", "xmpp", "nntp", "postgres", "mysql"})
#: Lynis gate (issue 5).
LYNIS_MIN_HARDENING_INDEX = 85


@dataclass(frozen=True)
class TestsslFinding:
    id: str
    severity: str
    finding: str


@dataclass
class TestsslResult:
    service: str
    address: str
    findings: list[TestsslFinding] = field(default_factory=list)
    scan_problems: list[str] = field(default_factory=list)
    #: testssl WARN lines: a sub-check could not run (e.g. session resumption). Reported,
    #: not fatal: the rated checks still ran.
    warnings: list[str] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def at_least(self, severity: str) -> list[TestsslFinding]:
        floor = SEVERITIES.index(severity)
        return [f for f in self.findings if f.severity in SEVERITIES and SEVERITIES.index(f.severity) >= floor]

    def summary(self) -> dict[str, Any]:
        return {
            "address": self.address,
            **{severity.lower(): self.count(severity) for severity in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
            "scan_problems": len(self.scan_problems),
            "warnings": len(self.warnings),
        }


def testssl_services(endpoints: Iterable[str]) -> list[str]:
    """The declared endpoints testssl.sh can scan: implicit TLS, or a STARTTLS it speaks."""
    declared = set(endpoints)
    return [service for service, (_, starttls) in SERVICES.items()
            if service in declared and (starttls is None or starttls in TESTSSL_STARTTLS)]


def testssl_command(host: str, port: int, json_file: str, *, starttls: str | None, ca_file: str | None,
                    server_name: str | None = None) -> list[str]:
    """testssl.sh against one endpoint.

    With ``server_name`` the scan connects to ``host`` (``--ip``) but uses the real
    name for SNI and certificate matching, and does no DNS (``--nodns none``): the lab's
    names exist only in its certificate, and a scan must never wander off loopback.
    """
    command = ["testssl", *TESTSSL_CHECKS, "--jsonfile", json_file, "--quiet", "--warnings", "off", "--color", "0",
               "--connect-timeout", "10", "--openssl-timeout", "10", "--nodns", "none"]
    if ca_file:
        command += ["--add-ca", ca_file]
    if starttls:
        command += ["--starttls", starttls]
    if server_name:
        command += ["--ip", host, f"{server_name}:{port}"]
    else:
        command.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return command


#: testssl ids that describe the scan itself rather than the server.
_SCAN_META_IDS = re.compile(r"^(scanTime|scanProblem|engine_problem|pre_128cipher|service|clientsimulation-.*)$")


def parse_testssl_json(text: str, *, service: str, address: str) -> TestsslResult:
    """Read testssl's ``--jsonfile`` (a flat list of findings)."""
    result = TestsslResult(service=service, address=address)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        result.scan_problems.append(f"testssl JSON unreadable: {exc}")
        return result
    if isinstance(items, dict):  # --jsonfile-pretty shape
        items = [f for block in items.get("scanResult", []) for v in block.values()
                 if isinstance(v, list) for f in v]
    for item in items:
        if not isinstance(item, dict):
            continue
        severity = str(item.get("severity", "")).upper()
        finding_id = str(item.get("id", ""))
        text_finding = str(item.get("finding", ""))
        if finding_id == "scanProblem" or severity == "FATAL":
            result.scan_problems.append(f"{finding_id}: {text_finding}")
            continue
        if severity == "WARN":
            result.warnings.append(f"{finding_id}: {text_finding}")
            continue
        if _SCAN_META_IDS.match(finding_id):
            continue
        result.findings.append(TestsslFinding(finding_id, severity, text_finding))
    if not result.findings and not result.scan_problems:
        result.scan_problems.append("testssl reported no findings at all (scan did not run?)")
    return result


def accept_findings(results: dict[str, TestsslResult], accepted: dict[str, str]
                    ) -> tuple[dict[str, list[TestsslFinding]], list[str]]:
    """Split findings into those that count and those a waiver accepts by ID (with its reason)."""
    counted: dict[str, list[TestsslFinding]] = {}
    waived: list[str] = []
    for service, result in results.items():
        counted[service] = [f for f in result.findings if f.id not in accepted]
        waived += [f"{service}: {f.severity} {f.id} ({accepted[f.id]})" for f in result.findings
                   if f.id in accepted and f.severity in ("MEDIUM", "HIGH", "CRITICAL")]
    return counted, waived


def parse_lynis_report(text: str) -> dict[str, Any]:
    """``/var/log/lynis-report.dat`` -> hardening index, warnings and suggestions."""
    index: int | None = None
    warnings: list[str] = []
    suggestions: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "hardening_index" and value.strip().isdigit():
            index = int(value.strip())
        elif key == "warning[]":
            warnings.append(value.strip())
        elif key == "suggestion[]":
            suggestions.append(value.strip())
    return {"hardening_index": index, "warnings": warnings, "suggestions": suggestions}
