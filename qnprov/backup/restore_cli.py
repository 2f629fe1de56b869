"""``qnprov restore mailbox``: one person's mail, or one folder, back from a snapshot (docs/backup.md).

The full-host ``qnprov restore --host`` (issue 11) is not built yet; this app leaves room for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qnprov import cliout, inventory, paths
from qnprov.backup import ops
from qnprov.backup.cli import InventoryOpt, LimitOpt, VaultOpt, _print_errors
from qnprov.backup.reports import document
from qnprov.backup.restore import host_arguments
from qnprov.cliout import JsonOpt, err, out, print_json
from qnprov.errors import ExternalError, InputError

restore_app = typer.Typer(help="Restore from the backups: one mailbox, or one folder of it.", no_args_is_help=True)


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
