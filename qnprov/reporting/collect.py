"""Where the audit trails come from, and each host's chain checked while it is counted.

Two sources: local paths (``--trail [HOST=]PATH``, a file or a directory of daily
files), or every host of the inventory's ``mta`` group over the deploy connection:
``playbooks/report-collect.yml`` (run through :mod:`qnprov.runner`) fetches the daily
files of the period into a private temporary directory. A host that cannot be reached
stays in the report, named, with its error.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qnprov import paths
from qnprov.errors import InputError
from qnprov.policy.audit import audit_files, verify_audit_log

COLLECT_PLAYBOOK = paths.PLAYBOOKS_DIR / "report-collect.yml"
MTA_GROUP = "mta"
_DAILY = re.compile(r"audit-(\d{4}-\d{2}-\d{2})\.jsonl$")


@dataclass
class HostTrail:
    host: str
    files: list[Path] = field(default_factory=list)
    #: Why the trail could not be collected (unreachable host, missing path).
    error: str | None = None


def parse_trail(spec: str) -> HostTrail:
    """``HOST=PATH`` or ``PATH`` (the host is then the file's or directory's name)."""
    host, sep, rest = spec.partition("=")
    named = bool(sep and host and rest) and not Path(spec).exists()
    path = Path(rest if named else spec)
    name = host if named else (path.stem if path.is_file() else path.name)
    try:
        return HostTrail(name, audit_files(path))
    except InputError as exc:
        return HostTrail(name, error=str(exc))


def in_period(files: Sequence[Path], since: dt.date, until: dt.date) -> list[Path]:
    """Daily files (``audit-YYYY-MM-DD.jsonl``) of days in ``[since, until)``; other files all."""
    kept = []
    for file in files:
        match = _DAILY.search(file.name)
        if match is None or since.isoformat() <= match[1] < until.isoformat():
            kept.append(file)
    return kept


def check_trail(trail: HostTrail, visit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Verify one host's chain, feeding each good record (with its host) to ``visit``."""
    row: dict[str, Any] = {"host": trail.host, "reachable": trail.error is None, "files": len(trail.files),
                           "ok": False, "records": 0, "bad_file": None, "bad_line": None, "reason": trail.error,
                           "warnings": []}
    if trail.error is not None:
        return row
    if not trail.files:
        row.update(ok=True, warnings=["no audit files in the period"])
        return row

    def tagged(record: dict[str, Any]) -> None:
        record["host"] = trail.host
        visit(record)

    result = verify_audit_log(trail.files, visit=tagged)
    row.update(ok=result.ok, records=result.records, bad_file=result.bad_file and Path(result.bad_file).name,
               bad_line=result.bad_line, reason=result.reason, warnings=list(result.warnings))
    return row


def fetch_trails(inventory: Path, since: dt.date, until: dt.date, dest: Path | None = None,
                 group: str = MTA_GROUP) -> list[HostTrail]:
    """Fetch every ``group`` host's daily audit files of the period over the deploy connection."""
    from qnprov import inventory as inventory_mod
    from qnprov.runner import run_playbook

    hosts = inventory_mod.load(inventory).groups().get(group, [])
    if not hosts:
        raise InputError(f"inventory {inventory} has no hosts in group {group!r}")
    dest = dest or Path(tempfile.mkdtemp(prefix="qnprov-report-"))
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)  # the trails name officials' addresses
    settings = dest / "collect-vars.yml"
    settings.write_text(yaml.safe_dump({
        "qnprov_report_hosts": group, "qnprov_report_dest": str(dest / "trails"),
        "qnprov_report_since": since.isoformat(), "qnprov_report_until": until.isoformat()}), encoding="utf-8")
    result = run_playbook(COLLECT_PLAYBOOK, inventory=inventory, extravars_files=[settings])
    failures = {f.host: f.message for f in result.failures}
    trails = []
    for host in hosts:
        stats = result.hosts.get(host)
        if host in failures or stats is None or stats.failed or stats.unreachable:
            reason = failures.get(host) or ("unreachable" if stats and stats.unreachable else result.status)
            trails.append(HostTrail(host, error=f"collection failed: {reason}"))
            continue
        folder = dest / "trails" / host
        files = audit_files(folder) if folder.is_dir() else []
        trails.append(HostTrail(host, in_period(files, since, until)))
    return trails
