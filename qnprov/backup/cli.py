"""``qnprov backup run|list|verify``: argument parsing and output (docs/backup.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qnprov import cliout, paths
from qnprov.backup import ops
from qnprov.backup.reports import HostReport, document, human_size
from qnprov.cliout import JsonOpt, err, out, print_json
from qnprov.errors import ExternalError

backup_app = typer.Typer(help="Back up every host with restic, list and verify the snapshots.",
                         no_args_is_help=True)

InventoryOpt = Annotated[str, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")]
LimitOpt = Annotated[str | None, typer.Option("--limit", help="Only these hosts (Ansible pattern).")]
VaultOpt = Annotated[Path | None, typer.Option("--vault-password-file")]


def _collect(inventory: str, action: str, limit: str | None, snapshot: str | None,
             vault_password_file: Path | None) -> dict[str, HostReport]:
    inv = paths.resolve_inventory(inventory)
    reports, result = ops.run_action(inv, action, limit=limit, snapshot=snapshot,
                                     vault_password_file=vault_password_file)
    if not reports:
        why = "; ".join(f.message for f in result.failures) or f"no host matched (limit {limit!r})"
        raise ExternalError(f"backup {action}: {why}")
    return reports


def _print_errors(reports: dict[str, HostReport]) -> None:
    for host, report in sorted(reports.items()):
        if not report.ok:
            hint = f" ({report.hint})" if report.hint else ""
            err.print(f"[red]{host}:[/red] {report.error}{hint}", markup=True, highlight=False)


def _finish(action: str, reports: dict[str, HostReport], as_json: bool, table: Table | None) -> None:
    if as_json:
        print_json(document(action, reports))
    else:
        if table is not None and table.row_count:
            out.print(table)
        _print_errors(reports)
    cliout.finish(all(r.ok for r in reports.values()))


@backup_app.command("run")
@cliout.user_errors()
def run_command(inventory: InventoryOpt, limit: LimitOpt = None, vault_password_file: VaultOpt = None,
                as_json: JsonOpt = False) -> None:
    """Back up now: start each host's qnprov-backup.service and wait for it."""
    if not as_json:
        err.print("starting qnprov-backup.service on each host ...")
    reports = _collect(inventory, "run", limit, None, vault_password_file)
    table = Table("host", "snapshot", "processed", "added", "ldap entries", "mailboxes", "seconds",
                  title="backup run")
    for host, report in sorted(reports.items()):
        if report.ok:
            data = report.data
            table.add_row(host, str(data.get("snapshot", "")), human_size(data.get("bytes_processed")),
                          human_size(data.get("bytes_added")), str(data.get("ldap_entries") or "-"),
                          str(data.get("mailboxes", 0)), str(data.get("seconds", "")))
    _finish("run", reports, as_json, table)


@backup_app.command("list")
@cliout.user_errors()
def list_command(inventory: InventoryOpt, limit: LimitOpt = None, vault_password_file: VaultOpt = None,
                 as_json: JsonOpt = False) -> None:
    """List each host's snapshots: time, size and what each contains."""
    reports = _collect(inventory, "list", limit, None, vault_password_file)
    table = Table("host", "snapshot", "time", "size", "ldap entries", "mailboxes", "messages", "files",
                  title="snapshots")
    for host, report in sorted(reports.items()):
        for snap in report.data.get("snapshots", []) if report.ok else []:
            contents = snap.get("contents") or {}
            table.add_row(host, snap["id"], snap["time"][:19].replace("T", " "), human_size(snap.get("size")),
                          str(contents.get("ldap_entries") or "-"), str(contents.get("mailboxes", 0)),
                          str(contents.get("messages", 0)), ", ".join(contents.get("files", [])))
    _finish("list", reports, as_json, table)


@backup_app.command("verify")
@cliout.user_errors()
def verify_command(inventory: InventoryOpt, limit: LimitOpt = None,
                   snapshot: Annotated[str | None, typer.Option("--snapshot", help="This snapshot, not the latest.")]
                   = None,
                   vault_password_file: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """restic check, then restore a sample of the latest snapshot and compare it with its manifest."""
    reports = _collect(inventory, "verify", limit, snapshot, vault_password_file)
    table = Table("host", "snapshot", "check", "files compared", title="backup verify")
    for host, report in sorted(reports.items()):
        if report.ok:
            table.add_row(host, str(report.data.get("snapshot")), str(report.data.get("check")),
                          str(report.data.get("compared")))
    _finish("verify", reports, as_json, table)
