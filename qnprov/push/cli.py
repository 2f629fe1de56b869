"""``qnprov push``: day-2 changes to the MTAs in seconds, without a full Ansible run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from qnprov import cliout, inventory, paths
from qnprov.cliout import JsonOpt, err, out, print_json
from qnprov.policy.milter.blocklist import new_block
from qnprov.push.apply import HostResult
from qnprov.push.blocks import block_plan, unblock_plan
from qnprov.push.run import Plan, PushResult, push, render_all, target_hosts

push_app = typer.Typer(help="Day-2 changes pushed to every MTA in seconds (pyinfra over SSH).",
                       no_args_is_help=True)

InventoryOpt = Annotated[str, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Show what would change (with a diff); write nothing.")]
DiffOpt = Annotated[bool, typer.Option("--diff", help="Show the differences of the files written.")]
LimitOpt = Annotated[str | None, typer.Option("--limit", help="Only these hosts (Ansible pattern).")]
VaultOpt = Annotated[Path | None, typer.Option("--vault-password-file", help="Decrypts vault values.")]
_STYLE = {"changed": "yellow", "failed": "red", "unchanged": "green"}


def _run(inventory_name: str, command: str, *, check: bool, diff: bool, limit: str | None,
         vault_password_file: Path | None, as_json: bool, plan: Plan | None = None) -> PushResult:
    with cliout.user_errors():
        inv = inventory.load(paths.resolve_inventory(inventory_name), vault_password_file=vault_password_file)
        hosts = sorted(render_all(inv, target_hosts(inv, limit)))
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True, disable=as_json) as progress:
            task = progress.add_task(f"push {command}{' --check' if check else ''}: {', '.join(hosts)}",
                                     total=len(hosts))

            def done(host: HostResult) -> None:
                progress.advance(task)
                if not as_json:
                    err.print(f"  {escape(host.host)}: [{_STYLE.get(host.status, '')}]{host.status}[/] "
                              f"{escape(host.message)}")

            result = push(inv, command, limit=limit, check=check, diff=diff, plan=plan, on_host=done)
    if as_json:
        print_json(result.as_json())
    else:
        _print_human(result, show_diff=check or diff)
    cliout.finish(not result.failed)
    return result


def _print_human(result: PushResult, *, show_diff: bool, action_column: str = "milter") -> None:
    if show_diff:
        for host in sorted(result.hosts.values(), key=lambda h: h.host):
            if host.diff:
                out.print(f"--- {host.host}", style="bold")
                out.print(host.diff, markup=False, highlight=False, end="")
    table = Table(title=f"push {result.command}{' (check)' if result.check else ''}: {result.seconds:.1f}s",
                  title_justify="left")
    for column in ("host", "status", "files", action_column, "message"):
        table.add_column(column)
    for name, host in sorted(result.hosts.items()):
        status = "would change" if result.check and host.status == "changed" else host.status
        table.add_row(name, status, str(len(host.files)), host.action or "-", host.message,
                      style=_STYLE.get(host.status))
    out.print(table)


@push_app.command("policy")
def policy(inventory_name: InventoryOpt, check: CheckOpt = False, diff: DiffOpt = False, limit: LimitOpt = None,
           vault_password_file: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """Site overrides, agency map, rule bundle and trust anchors, as roles/qnprov_milter writes them."""
    _run(inventory_name, "policy", check=check, diff=diff, limit=limit, vault_password_file=vault_password_file,
         as_json=as_json)


@push_app.command("block")
def block(
    target: Annotated[str, typer.Argument(help="A sender address (user@example.com) or a domain (example.com).")],
    inventory_name: InventoryOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why: sent in the rejection, kept in the audit trail.")],
    expires: Annotated[str | None, typer.Option("--expires", help="A duration (30m, 4h, 7d) or ISO date-time.")] = None,
    check: CheckOpt = False, diff: DiffOpt = False, limit: LimitOpt = None, vault_password_file: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject mail from a sender or domain on every MTA (envelope sender and header From)."""
    with cliout.user_errors():
        now = dt.datetime.now(dt.UTC)
        entry = new_block(target, reason, now=now, expires=expires)
    if entry.expires is not None and entry.expires <= now and not as_json:
        err.print(f"[yellow]warning:[/yellow] --expires {escape(expires or '')} is already past: "
                  "the entry is written but blocks nothing")
    _run(inventory_name, f"block {entry.target}", check=check, diff=diff, limit=limit,
         vault_password_file=vault_password_file, as_json=as_json, plan=block_plan(entry))


@push_app.command("unblock")
def unblock(
    inventory_name: InventoryOpt,
    target: Annotated[str | None, typer.Argument(help="The blocked sender or domain.")] = None,
    expired: Annotated[bool, typer.Option("--expired", help="Also drop every expired entry.")] = False,
    check: CheckOpt = False, diff: DiffOpt = False, limit: LimitOpt = None, vault_password_file: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift a block on every MTA (or clean expired entries out with --expired)."""
    with cliout.user_errors():
        if target is None and not expired:
            from qnprov.errors import InputError

            raise InputError("name the sender or domain to unblock, or give --expired")
        plan = unblock_plan(target, expired=expired)
    _run(inventory_name, f"unblock {target or '--expired'}", check=check, diff=diff, limit=limit,
         vault_password_file=vault_password_file, as_json=as_json, plan=plan)


@push_app.command("tls")
def tls(
    inventory_name: InventoryOpt,
    cert: Annotated[Path, typer.Option("--cert", help="The host certificate (PEM; intermediates may follow it).")],
    key: Annotated[Path, typer.Option("--key", help="Its private key (PEM, no passphrase). Never printed.")],
    chain: Annotated[Path | None, typer.Option("--chain", help="Intermediate certificates (PEM).")] = None,
    check: CheckOpt = False, diff: DiffOpt = False, limit: LimitOpt = None, vault_password_file: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A new certificate and key on every host, checked first; services reloaded and probed."""
    from qnprov.push import tls as tls_push

    def refused(exc: Exception) -> dict[str, object] | None:
        return {"command": "tls", "check": check, "ok": False, "refused": str(exc)} if as_json else None

    with cliout.user_errors(refused):
        inv = inventory.load(paths.resolve_inventory(inventory_name), vault_password_file=vault_password_file)
        material = tls_push.load_material(cert, key, chain)
        prepared = tls_push.prepare(inv, material, limit)
        hosts = sorted(prepared)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True, disable=as_json) as progress:
            task = progress.add_task(f"push tls{' --check' if check else ''}: {', '.join(hosts)}", total=len(hosts))

            def done(host: HostResult) -> None:
                progress.advance(task)
                if not as_json:
                    err.print(f"  {escape(host.host)}: [{_STYLE.get(host.status, '')}]{host.status}[/] "
                              f"{escape(host.message)}")

            result = tls_push.push_tls(inv, material, limit=limit, check=check, diff=diff, on_host=done,
                                         prepared=prepared)
    if as_json:
        doc = result.as_json()
        doc["certificate"] = {"subject": material.leaf.subject.rfc4514_string(), "sha256": material.fingerprint,
                              "not_after": material.leaf.not_valid_after_utc.isoformat()}
        print_json(doc)
    else:
        _print_human(result, show_diff=check or diff, action_column="services")
    cliout.finish(not result.failed)


dkim_app = typer.Typer(help="DKIM key rotation on every MTA, in two phases.", no_args_is_help=True)
push_app.add_typer(dkim_app, name="dkim")


@dkim_app.command("rotate")
def dkim_rotate(
    inventory_name: InventoryOpt,
    domain: Annotated[str, typer.Option("--domain", help="The hosted domain whose key rotates.")],
    selector: Annotated[str | None, typer.Option(
        "--selector", help="Phase 1: the new selector (default s<YYYYMMDD>, or the pending one on a rerun).")] = None,
    activate: Annotated[bool, typer.Option(
        "--activate", help="Phase 2: switch signing once the new record is visible in DNS.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="With --activate: switch even if the record is not visible (a warning).")] = False,
    check: CheckOpt = False, limit: LimitOpt = None, vault_password_file: VaultOpt = None, as_json: JsonOpt = False,
) -> None:
    """Phase 1: one new key on every MTA and the TXT record to publish. Phase 2 (--activate): sign with it."""
    from qnprov.errors import InputError
    from qnprov.push import dkim, dkimkeys

    with cliout.user_errors():
        if force and not activate:
            raise InputError("--force only goes with --activate (it skips the DNS check of the new record)")
        if selector and activate:
            raise InputError("--selector names phase 1's new selector; --activate switches to the pending one")
        if selector:
            dkimkeys.check_selector(selector)
        inv = inventory.load(paths.resolve_inventory(inventory_name), vault_password_file=vault_password_file)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                      transient=True, disable=as_json) as progress:
            progress.add_task(f"push dkim rotate {domain}{' --activate' if activate else ''}"
                              f"{' --check' if check else ''}")

            def done(host: HostResult) -> None:
                if not as_json:
                    err.print(f"  {escape(host.host)}: [{_STYLE.get(host.status, '')}]{host.status}[/] "
                              f"{escape(host.message)}")

            if activate:
                rotation = dkim.activate(inv, domain, force=force, limit=limit, check=check, on_host=done)
            else:
                rotation = dkim.prepare(inv, domain, selector=selector, limit=limit, check=check, on_host=done)
    if as_json:
        print_json(rotation.as_json())
    else:
        _print_rotation(rotation)
    cliout.finish(not rotation.result.failed)


def _print_rotation(rotation: object) -> None:
    from qnprov.push.dkim import Rotation
    from qnprov.push.dkimkeys import record_name, retirement_due

    assert isinstance(rotation, Rotation)
    for warning in rotation.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    _print_human(rotation.result, show_diff=rotation.result.check, action_column="rspamd")
    if rotation.phase == "prepare" and rotation.records:
        out.print(f"Key of selector {rotation.selector} {rotation.key}; {rotation.domain} still signs with "
                  f"{rotation.previous}. Publish this record, then run "
                  f"`qnprov push dkim rotate --domain {rotation.domain} --activate`:")
        for rec in rotation.records:
            out.print(rec.zone_line(), markup=False, highlight=False, soft_wrap=True)
    if rotation.phase == "activate" and rotation.selector:
        out.print(f"{rotation.domain} signs with selector {rotation.selector}.")
    now = dt.datetime.now(dt.UTC)
    due = set(retirement_due(rotation.retiring, now))
    for item in rotation.retiring:
        when = "now" if item["selector"] in due else f"after {item['retire_after']}"
        out.print(f"retiring: {record_name(rotation.domain, item['selector'])} TXT, remove {when}",
                  markup=False, highlight=False)
