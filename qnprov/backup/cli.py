"""``qnprov backup run|list|verify`` and ``qnprov restore mailbox``: argument parsing and output (docs/backup.md).

``qnprov restore -i INV --host HOST`` (issue 11) rebuilds a lost host: converge, then the host script's
``restore-host``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qnprov import cliout, inventory, paths, runner
from qnprov.backup import ops, restore
from qnprov.backup.reports import HostReport, document, human_size
from qnprov.backup.restore import host_arguments
from qnprov.cliout import JsonOpt, err, out, print_json
from qnprov.errors import ExternalError, InputError

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


# --- qnprov restore -------------------------------------------------------------------------

restore_app = typer.Typer(help="Restore from the backups: a whole lost host (--host), or one mailbox or folder.",
                          no_args_is_help=True)


def _one_host(inv: Path, limit: str | None) -> str:
    """The one host the restore runs on: a mailbox is restored where it lives, never on every host."""
    pattern = f"mail_all:&{limit}" if limit else "mail_all"
    hosts = inventory.load(inv).hosts_matching(pattern)
    if len(hosts) != 1:
        found = ", ".join(hosts) or "none"
        raise InputError(f"restore mailbox runs on exactly one host; {pattern!r} selects {len(hosts)} ({found}): "
                         "pass --limit HOST, the host that holds the mailbox")
    return hosts[0]


@restore_app.command("mailbox")
@cliout.user_errors()
def mailbox_command(
    address: Annotated[str, typer.Argument(help="The user whose mail is restored.")],
    inventory_name: InventoryOpt,
    limit: LimitOpt = None,
    folder: Annotated[str | None, typer.Option("--folder", help="Only this folder (not its subfolders).")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="This snapshot, not the latest.")] = None,
    into: Annotated[str | None, typer.Option(
        "--into", help="The new folder the mail goes into (default Restored/SNAPSHOT-DATE); never an existing one.")]
    = None,
    check: Annotated[bool, typer.Option("--check", help="Say what would be restored; write nothing.")] = False,
    vault_password_file: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore ADDRESS's mail (or --folder) from a snapshot into a new folder of the live mailbox.

    Other mailboxes, and the person's mail since the backup, are not written.
    """
    args = host_arguments(address, folder=folder, into=into, check=check)
    inv = paths.resolve_inventory(inventory_name)
    host = _one_host(inv, limit)
    reports, result = ops.run_action(inv, "restore-mailbox", limit=host, snapshot=snapshot,
                                     vault_password_file=vault_password_file, args=args)
    if not reports:
        why = "; ".join(f.message for f in result.failures) or f"no report from {host}"
        raise ExternalError(f"restore mailbox: {why}")
    if as_json:
        print_json(document("restore-mailbox", reports))
    else:
        for name, report in sorted(reports.items()):
            if not report.ok:
                continue
            data = report.data
            verb = "would restore" if data.get("check") else "restored"
            table = Table("from folder", "into folder", "messages",
                          title=f"{name}: {verb} {data.get('address')} from snapshot {data.get('snapshot')} "
                                f"({str(data.get('snapshot_time', ''))[:19].replace('T', ' ')})")
            for source, count in (data.get("folders") or {}).items():
                table.add_row(source, f"{data.get('into')}/{source}", str(count))
            out.print(table)
            if not data.get("messages"):
                err.print(f"{name}: the snapshot holds no message there; nothing to restore")
        _print_errors(reports)
    cliout.finish(all(r.ok for r in reports.values()))


@restore_app.callback(invoke_without_command=True)
@cliout.user_errors()
def restore_host_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Rebuild this host (a brand-new machine) from its backup.")]
    = None,
    inventory_name: Annotated[str | None, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")]
    = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="This snapshot, not the host's latest.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Say what would be done; change nothing.")] = False,
    skip_site_converge: Annotated[bool, typer.Option(
        "--skip-site-converge", help="Do not run site.yml first (the roles were converged already); "
                                     "backup.yml still runs.")] = False,
    vault_password_file: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild a lost host: `qnprov restore -i INV --host HOST [--snapshot ID] [--check] [--json]`.

    Converges the roles on HOST (site.yml, then backup.yml, --limit HOST), restores its data from the
    snapshot (services stopped throughout; a failed step leaves them stopped), starts the services,
    checks they answer and verifies the audit chain.
    """
    if ctx.invoked_subcommand is not None:
        if host is not None:
            raise InputError("--host rebuilds a whole host; it does not go with a subcommand")
        return
    if host is None or inventory_name is None:
        raise InputError("qnprov restore needs -i INVENTORY and --host HOST (or a subcommand: `restore mailbox`)")
    if snapshot is not None and (not snapshot or not all(c in "0123456789abcdef" for c in snapshot)):
        raise InputError(f"snapshot id {snapshot!r} is not a restic id (hexadecimal)")
    inv = paths.resolve_inventory(inventory_name)
    restore.check_host(host, inventory.load(inv).hosts_matching("mail_all"))
    converge = restore.converge_steps(skip_site=skip_site_converge)
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    report = None
    error = None
    if not check:
        from qnprov.ui import run_site  # the deploy path (topology and argument checks first)

        for playbook in converge:
            if not as_json:
                err.print(f"converging playbooks/{playbook} on {host} ...")
            begun = time.monotonic()
            if playbook == "site.yml":
                result = run_site(inv, limit=host, show_progress=not as_json, label="restore",
                                  vault_password_file=vault_password_file)
            else:
                # Never `qnprov-backup init` here: a restore must not create an empty repository where
                # the backups should be (a wrong path or key is the restore's clear error instead).
                result = runner.run_playbook(paths.PLAYBOOKS_DIR / playbook, inventory=inv, limit=host,
                                             skip_tags="backup-init", vault_password_file=vault_password_file)
            step: dict[str, Any] = {"step": f"converge-{playbook.removesuffix('.yml')}", "playbook": playbook,
                                       "ok": not result.failed, "seconds": round(time.monotonic() - begun, 2)}
            steps.append(step)
            if result.failed:
                step["error"] = "; ".join(f"{f.task}: {f.message}" for f in result.failures) or f"rc {result.rc}"
                error = {"kind": "converge-failed",
                         "message": f"converging {playbook} on {host} failed: {step['error']}; nothing was restored",
                         "hint": "fix the deploy, then run `qnprov restore --host` again"}
                break
    if error is None:
        if not as_json:
            err.print(f"{'planning' if check else 'restoring'} {host}'s data from "
                      f"{'snapshot ' + snapshot if snapshot else 'its latest snapshot'} ...")
        reports, result = ops.run_action(inv, "restore-host", limit=host, snapshot=snapshot,
                                         vault_password_file=vault_password_file, args=["--check"] if check else [])
        found = reports.get(host)
        if found is None:
            why = "; ".join(f.message for f in result.failures) or f"no report from {host}"
            error = {"kind": "no-report", "message": f"restore --host: {why}", "hint": ""}
        else:
            report = found.as_json()
    document = restore.host_document(host, steps, report, time.monotonic() - started, check=check,
                                     converge=converge, error=error)
    if as_json:
        print_json(document)
    else:
        _print_host_restore(document)
    cliout.finish(document["ok"])


def _print_host_restore(document: dict[str, Any]) -> None:
    host = document["host"]
    if document.get("snapshot"):
        out.print(f"{host}: snapshot {document['snapshot']} ({str(document.get('snapshot_time', ''))[:19]})")
    if document.get("check"):
        for line in document.get("plan") or []:
            out.print(f"  would {line}")
    else:
        table = Table("step", "result", "seconds", title=f"restore --host {host}")
        for step in document.get("steps") or []:
            table.add_row(step["step"], "ok" if step.get("ok") else f"FAILED: {step.get('error', '')}",
                          str(step.get("seconds", "")))
        out.print(table)
        if document.get("ok"):
            out.print(f"{host} restored and answering in {document['seconds']} s")
    error = document.get("error")
    if error:
        hint = f" ({error['hint']})" if error.get("hint") else ""
        err.print(f"[red]{host}:[/red] {error['message']}{hint}", markup=True, highlight=False)
