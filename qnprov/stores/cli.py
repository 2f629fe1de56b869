"""``qnprov store failover`` and ``qnprov store failback``: thin typer layer over ``failover``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qnprov.cliout import out, print_json, user_errors
from qnprov.directory import ldapio
from qnprov.directory.settings import ConnectionOptions, resolve_settings
from qnprov.errors import InputError, QnprovError
from qnprov.stores import dedupe, failover
from qnprov.stores.config import load_store_config
from qnprov.stores.probe import AnsibleProbe, StoreProbe

store_app = typer.Typer(help="Mail stores: move accounts to a replica and back, collapse failover copies (issue 10).",
                        no_args_is_help=True,
                        pretty_exceptions_enable=False, add_completion=False)

StoreArg = Annotated[str, typer.Argument(help="The store's host name, as in qnprov_stores.")]
InventoryOpt = Annotated[str, typer.Option("-i", "--inventory", help="Inventory name or path (qnprov_stores).")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Show what would change; write nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
# The directory connection, as `qnprov accounts` takes it (a CLI module imports no other).
LdapUrlOpt = Annotated[str | None, typer.Option("--ldap-url", help="ldaps://HOST or ldap://HOST (StartTLS); "
                                                "default: from the inventory.")]
BindDnOpt = Annotated[str | None, typer.Option("--bind-dn", help="Writer DN; default cn=qnprov,ou=services,<base>.")]
PasswordFileOpt = Annotated[Path | None, typer.Option("--bind-password-file", help="File with the bind password.")]
CaCertOpt = Annotated[Path | None, typer.Option("--ca-cert", help="CA bundle of the LDAP server.")]
BaseDnOpt = Annotated[str | None, typer.Option("--base-dn", help="DIT suffix; default: from the inventory.")]


def make_probe(inventory: str) -> StoreProbe:
    """How a store's replicator is asked (over the inventory's deploy connection)."""
    return AnsibleProbe(inventory)


def _json_error(plan_holder: dict[str, Any]) -> Any:
    def document(exc: QnprovError) -> dict[str, Any]:
        plan = plan_holder.get("plan")
        base = plan.summary(applied=False) if plan is not None else {"applied": False}
        return {**base, "refused": True, "message": str(exc),
                "errors": exc.errors if isinstance(exc, InputError) else []}
    return document


def _run(direction: failover.Direction, store: str, to: str | None, inventory: str, check: bool, as_json: bool,
         connection: ConnectionOptions, max_sync_age: int) -> None:
    holder: dict[str, Any] = {}
    with user_errors(_json_error(holder) if as_json else None):
        config = load_store_config(inventory)
        if not config.enabled:
            raise failover.Refused(f"inventory {inventory} has no mail stores (qnprov_stores is empty)")
        settings = resolve_settings(connection)
        ldap = ldapio.connect(settings)
        try:
            if direction == "failover":
                plan = failover.plan_failover(ldap, settings.base_dn, config, store, to)
            else:
                plan = failover.plan_failback(ldap, settings.base_dn, config, store)
            holder["plan"] = plan
            failover.check_target(plan, make_probe(inventory), max_sync_age=max_sync_age)
            written = 0 if check else failover.apply_moves(ldap, plan)
        finally:
            ldap.unbind()
    if as_json:
        print_json(plan.summary(applied=not check, written=written), indent=None)
        return
    if plan.moves:
        table = Table(title=f"{direction} {plan.store} -> {plan.target}", show_edge=False)
        for column in ("account", "from", "to"):
            table.add_column(column)
        for move in plan.moves:
            table.add_row(move.mail, move.source, move.target)
        out.print(table)
    verb = "would move" if check else "moved"
    out.print(f"{direction}: {verb} {len(plan.moves) if check else written} account(s) to {plan.target}; "
              f"{plan.already} already there." + (" Nothing written (--check)." if check else ""))


def _connection(inventory: str, ldap_url: str | None, bind_dn: str | None, bind_password_file: Path | None,
                ca_cert: Path | None, base_dn: str | None) -> ConnectionOptions:
    return ConnectionOptions(inventory=inventory, ldap_url=ldap_url, base_dn=base_dn, bind_dn=bind_dn,
                             bind_password_file=bind_password_file, ca_cert=ca_cert)


@store_app.command("failover")
def store_failover(
    store: StoreArg, inventory: InventoryOpt,
    to: Annotated[str | None, typer.Option("--to", help="Target store (default: STORE's replica).")] = None,
    check: CheckOpt = False, as_json: JsonOpt = False,
    ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None, bind_password_file: PasswordFileOpt = None,
    ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
) -> None:
    """Point every account on STORE at its replica (rewrites qnMailHost). Idempotent.

    Refused, with nothing written, when the target store is down or has never synced
    one of the accounts (its replicator, asked over the deploy connection).
    """
    _run("failover", store, to, inventory, check, as_json,
         _connection(inventory, ldap_url, bind_dn, bind_password_file, ca_cert, base_dn), 0)


@store_app.command("failback")
def store_failback(
    store: StoreArg, inventory: InventoryOpt, check: CheckOpt = False, as_json: JsonOpt = False,
    max_sync_age: Annotated[int, typer.Option("--max-sync-age", min=1, help=(
        "Seconds: STORE must have synced every account this recently, with no failed attempt since."))
    ] = failover.DEFAULT_MAX_SYNC_AGE,
    ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None, bind_password_file: PasswordFileOpt = None,
    ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
) -> None:
    """Move STORE's accounts (its agencies') back to STORE once it has resynced. Idempotent."""
    _run("failback", store, None, inventory, check, as_json,
         _connection(inventory, ldap_url, bind_dn, bind_password_file, ca_cert, base_dn), max_sync_age)


@store_app.command("dedupe")
def store_dedupe(
    store: StoreArg, inventory: InventoryOpt,
    window: Annotated[int, typer.Option("--window", min=60, max=dedupe.MAX_WINDOW, help=(
        "Seconds: compare the messages saved this recently."))] = dedupe.DEFAULT_WINDOW,
    check: CheckOpt = False, as_json: JsonOpt = False,
    ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None, bind_password_file: PasswordFileOpt = None,
    ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
) -> None:
    """Expunge the second copies a failover left on STORE (run after failback, queues empty).

    The copies are those the delivery script would have discarded: same mailbox,
    Message-ID, envelope sender and Date; the first copy stays. --check lists them.
    """
    holder: dict[str, Any] = {}

    def document(exc: QnprovError) -> dict[str, Any]:
        found = holder.get("plan")
        base = found.summary(applied=False, removed=holder.get("removed", 0)) if found else {"applied": False}
        return {**base, "refused": True, "message": str(exc)}

    with user_errors(document if as_json else None):
        if not load_store_config(inventory).enabled:
            raise failover.Refused(f"inventory {inventory} has no mail stores (qnprov_stores is empty)")
        settings = resolve_settings(_connection(inventory, ldap_url, bind_dn, bind_password_file, ca_cert, base_dn))
        ldap = ldapio.connect(settings)
        try:
            users = [mail for _, mail, _ in failover.accounts_on(ldap, settings.base_dn, [store.lower()]) if mail]
        finally:
            ldap.unbind()
        probe = make_probe(inventory)
        fetched = probe.command(store, dedupe.fetch_argv(users, window)) if users else ""
        found = holder["plan"] = dedupe.plan(store, window, users, fetched)
        holder["removed"] = 0
        if not check:
            for copy in found.extra:
                probe.command(store, dedupe.expunge_argv(copy))
                holder["removed"] += 1
            if found.extra:
                probe.command(store, dedupe.replicate_argv(sorted({c.user for c in found.extra})))
    if as_json:
        print_json(found.summary(applied=not check, removed=holder["removed"]), indent=None)
        return
    if found.extra:
        table = Table(title=f"copies on {store}", show_edge=False)
        for column in ("account", "mailbox", "uid", "Message-ID"):
            table.add_column(column)
        for copy in found.extra:
            table.add_row(copy.user, copy.mailbox, str(copy.uid), copy.message_id)
        out.print(table)
    verb = "would expunge" if check else "expunged"
    out.print(f"dedupe {store}: {found.read} message(s) of {found.accounts} account(s) saved in the last "
              f"{window} s; {verb} {len(found.extra) if check else holder['removed']} second copy(ies)."
              + (" Nothing written (--check)." if check else ""))
