"""The JSON reports ``qnprov-backup`` writes on each host, read on the controller. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIONS = ("run", "list", "verify", "restore-mailbox", "restore-host")

#: Error kinds the host script reports, and what a person should do about each.
HINTS = {
    "wrong-password": "the vault's backup_password does not open this repository",
    "missing-repository": "deploy playbooks/backup.yml (it runs `qnprov-backup init`) or fix backup_repository",
    "other-host": "pass a snapshot of this host, or --limit the host the snapshot belongs to",
    "no-snapshot": "run `qnprov backup run` first",
    "locked": "wait for the other restic process, or `restic unlock` after checking it is gone",
    "busy": "a backup is running on this host; try again when it ends",
    "same-disk": "mount the backup disk at the repository path, or use an sftp: or s3: repository",
    "mismatch": "the repository returned other bytes than were backed up: run `restic check --read-data`",
    "no-report": "the host sent no report: is the backup role deployed there?",
    "unknown-address": "check the address (`qnprov accounts show`), or --limit the host that holds the mailbox",
    "not-in-snapshot": "the mailbox is not in that snapshot: `qnprov backup list` shows each one's mailboxes",
    "no-folder": "folder names are as the IMAP client shows them, with / between levels",
    "folder-exists": "pass --into with a folder name that does not exist yet",
    "import-failed": "see the message: the folder it names is the only one written",
    "restore-failed": "the host's services are stopped: fix what the failed step names, then run "
                      "`qnprov restore --host` again (what the converge had put there is kept as *.pre-restore-*)",
    "no-mailboxes": "this host stages no mailboxes; --limit the host that holds the mailbox",
}


@dataclass
class HostReport:
    """One host's answer: ``data`` is the host script's document (without ok/error/command)."""

    host: str
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error_kind: str = ""
    error: str = ""

    @property
    def hint(self) -> str:
        return HINTS.get(self.error_kind, "")

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"ok": self.ok, **self.data}
        if not self.ok:
            document["error"] = {"kind": self.error_kind, "message": self.error, "hint": self.hint}
        return document


def parse_report(host: str, text: str) -> HostReport:
    """One host's report; a document that is not the script's own is a failed report."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return HostReport(host, False, error_kind="bad-report", error=f"the report is not JSON ({exc.msg})")
    if not isinstance(document, dict) or "ok" not in document:
        return HostReport(host, False, error_kind="bad-report", error="the report has no 'ok' field")
    data = {k: v for k, v in document.items() if k not in {"ok", "error", "command"}}
    if document["ok"] is True:
        return HostReport(host, True, data)
    error = document.get("error") or {}
    return HostReport(host, False, data, error_kind=str(error.get("kind", "unknown")),
                      error=str(error.get("message", "failed without a message")))


def read_reports(directory: Path, hosts: list[str], failures: dict[str, str]) -> dict[str, HostReport]:
    """The report of each host in ``hosts`` from ``directory`` (``HOST.json``); a host without one
    failed in Ansible (``failures`` says why) or never ran the script."""
    reports: dict[str, HostReport] = {}
    for host in sorted(set(hosts) | set(failures)):
        path = directory / f"{host}.json"
        if path.is_file():
            reports[host] = parse_report(host, path.read_text(encoding="utf-8"))
        else:
            reports[host] = HostReport(host, False, error_kind="no-report",
                                       error=failures.get(host, "no report was fetched"))
    return reports


def document(action: str, reports: dict[str, HostReport]) -> dict[str, Any]:
    """The ``--json`` document of one ``qnprov backup`` command."""
    return {"action": action, "ok": bool(reports) and all(r.ok for r in reports.values()),
            "hosts": {host: report.as_json() for host, report in sorted(reports.items())}}


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns
