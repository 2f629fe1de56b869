"""``qnprov accounts ...`` and ``qnprov agency ...``: thin typer layer over ``sync``/``ldapio``."""

from __future__ import annotations

import contextlib
import inspect
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from ldap3 import Connection
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from qnprov import dns
from qnprov.cliout import err, out, print_json
from qnprov.directory import ldapio, purge, reset
from qnprov.directory.cliopts import (
    DEFAULT_MAP,
    AgenciesOpt,
    AliasOpt,
    AllowMassOpt,
    BaseDnOpt,
    BindDnOpt,
    CaCertOpt,
    DiffOpt,
    DomainOpt,
    InventoryOpt,
    JsonOpt,
    LdapUrlOpt,
    PartialOpt,
    PasswordFileOpt,
    PatternOpt,
    RosterOpt,
    SkipInvalidOpt,
    SourceBaseOpt,
    SourceBindOpt,
    SourceFilterOpt,
    SourceMapOpt,
    SourcePasswordOpt,
    SourceUrlOpt,
    ThresholdOpt,
    _connection_options,
    _RefusedPlan,
    _user_errors,
)
from qnprov.directory.models import Agency, DirectoryState, Plan, agency_entries
from qnprov.directory.names import DEFAULT_ADDRESS_PATTERN
from qnprov.directory.passwords import CredentialsWriter, PasswordScheme
from qnprov.directory.settings import ConnectionOptions, resolve_settings
from qnprov.directory.sync import DEFAULT_MASS_CHANGE_THRESHOLD, SyncRequest, UpstreamSource, make_plan, refusal
from qnprov.errors import ConfigError
from qnprov.stores.config import load_store_config

accounts_app = typer.Typer(help="Mail accounts from the HR roster: plan, apply, purge.", no_args_is_help=True,
                           pretty_exceptions_enable=False, add_completion=False)
agency_app = typer.Typer(help="Provincial agencies: onboard and list.", no_args_is_help=True,
                         pretty_exceptions_enable=False, add_completion=False)

def _sync_request(agencies: Path | None, roster: Path | None, source_url: str | None, source_base: str | None,
                  source_filter: str, source_map: str, source_bind_dn: str | None,
                  source_password: Path | None, ca_cert: Path | None, **flags: Any) -> SyncRequest:
    upstream = None
    if source_url:
        if not source_base or not source_bind_dn or not source_password:
            raise ConfigError("--source-url needs --source-base, --source-bind-dn and --source-bind-password-file")
        password = source_password.read_text(encoding="utf-8").strip("\r\n")
        upstream = UpstreamSource(ldapio.LdapSettings(source_url, source_base, source_bind_dn, password, ca_cert),
                                  source_base, source_filter, source_map)
    return SyncRequest(agencies_file=agencies, roster_file=roster, upstream=upstream, **flags)


def _print_plan(plan: Plan, *, diff: bool) -> None:
    table = Table(title="Account plan", show_edge=False)
    for column in ("agencies", "create", "modify", "move", "disable", "enable", "lists", "invalid rows"):
        table.add_column(column, justify="right")
    table.add_row(str(len(plan.agency_creates) + len(plan.agency_updates)), *(str(plan.count(k)) for k in
                  ("create", "modify", "move", "disable", "enable")),
                  str(len(plan.group_updates)), str(len(plan.errors)))
    out.print(table)
    for error in plan.errors:
        out.print(f"  line {error.line}: {error.field}: {error.reason}")
    if plan.is_empty:
        out.print("Nothing to do: the directory matches the roster.")
        return
    if not diff:
        return
    for agency_create in plan.agency_creates:
        out.print(f"+ agency {agency_create.agency.code} ({len(agency_create.entries)} entries)")
    for agency_update in plan.agency_updates:
        changed = ", ".join(f"{c.attribute}: {list(c.old)} -> {list(c.new)}" for c in agency_update.changes)
        out.print(f"~ agency {agency_update.code}: {changed}")
    for create in plan.creates:
        out.print(f"+ {create.employee_id} {create.mail} ({create.agency})")
    for update in plan.updates:
        target = f" -> {update.new_dn}" if update.new_dn else ""
        out.print(f"~ {update.kind} {update.employee_id}{target}")
        for change in update.changes:
            out.print(f"    {change.attribute}: {list(change.old)} -> {list(change.new)}")
    for group in plan.group_updates:
        out.print(f"~ list {group.dn}: +{len(group.add)} -{len(group.remove)}")


def _plan_and_maybe_apply(apply: bool, *, connection_options: ConnectionOptions, request: SyncRequest,
                          as_json: bool, diff: bool, credentials_dir: Path | None = None,
                          hash_scheme: PasswordScheme = "ssha", window: int = ldapio.DEFAULT_WINDOW) -> None:
    settings = resolve_settings(connection_options)
    connection = ldapio.connect(settings)
    try:
        plan, _ = make_plan(connection, settings, request)
        problem = refusal(plan, request)
        if problem is not None:
            if as_json:  # the counts of the refused plan, its errors and why nothing was written
                raise _RefusedPlan(problem, plan)
            _print_plan(plan, diff=diff)
            raise problem
        if not apply:
            if as_json:
                print_json(plan.summary(applied=False), indent=None)
            else:
                _print_plan(plan, diff=diff)
            return
        if not as_json:
            _print_plan(plan, diff=diff)
        credentials = CredentialsWriter(credentials_dir) if credentials_dir and plan.creates else None
        progress = Progress(TextColumn("applying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=err, disable=as_json or plan.is_empty, transient=False)
        try:
            with progress:
                task = progress.add_task("apply", total=plan.write_count)
                result = ldapio.apply_plan(connection, plan, window=window, password_scheme=hash_scheme,
                                           credentials=credentials,
                                           on_done=lambda _op: progress.advance(task))
        finally:
            if credentials is not None:
                credentials.close()
        if as_json:
            print_json(plan.summary(applied=True), indent=None)
        else:
            out.print(f"Applied: {result.writes} writes, {result.created} accounts created.")
            if credentials is not None:
                out.print(f"Initial passwords: {credentials.directory}/<AGENCY>.csv (mode 0600).")
            elif plan.creates:
                out.print("No --credentials-dir: new accounts need a password reset before first login.")
    finally:
        connection.unbind()


@accounts_app.command("apply")
def accounts_apply(
    inventory: InventoryOpt = None, ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None,
    bind_password_file: PasswordFileOpt = None, ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
    domain: DomainOpt = None, agencies: AgenciesOpt = None, roster: RosterOpt = None,
    source_url: SourceUrlOpt = None, source_base: SourceBaseOpt = None,
    source_filter: SourceFilterOpt = "(objectClass=person)", source_map: SourceMapOpt = DEFAULT_MAP,
    source_bind_dn: SourceBindOpt = None, source_bind_password_file: SourcePasswordOpt = None,
    partial: PartialOpt = False, skip_invalid: SkipInvalidOpt = False,
    address_pattern: PatternOpt = DEFAULT_ADDRESS_PATTERN, alias_on_rename: AliasOpt = False,
    mass_change_threshold: ThresholdOpt = DEFAULT_MASS_CHANGE_THRESHOLD, allow_mass_change: AllowMassOpt = False,
    diff: DiffOpt = False, as_json: JsonOpt = False,
    credentials_dir: Annotated[Path | None, typer.Option(
        "--credentials-dir", help="Write DIR/<AGENCY>.csv with new accounts' initial passwords (0600).")] = None,
    hash_scheme: Annotated[str, typer.Option(
        "--password-scheme", help="ssha (default, fast) or argon2 (memory-hard, ~20 ms/hash/core).")] = "ssha",
    window: Annotated[int, typer.Option("--window", min=1, max=1024,
                                        help="LDAP requests in flight at once.")] = ldapio.DEFAULT_WINDOW,
) -> None:
    """Validate everything, then write the plan (pipelined, with a progress bar)."""
    _plan_or_apply(True, locals())


#: Options only `accounts apply` has; `accounts plan` takes every other option of apply.
_APPLY_ONLY = ("credentials_dir", "hash_scheme", "window")


def _plan_or_apply(write: bool, o: dict[str, Any]) -> None:
    with _user_errors(o["as_json"]):
        if write and o["hash_scheme"] not in ("ssha", "argon2"):
            raise ConfigError("--password-scheme must be ssha or argon2")
        request = _sync_request(o["agencies"], o["roster"], o["source_url"], o["source_base"], o["source_filter"],
                                o["source_map"], o["source_bind_dn"], o["source_bind_password_file"], o["ca_cert"],
                                partial=o["partial"], skip_invalid=o["skip_invalid"],
                                address_pattern=o["address_pattern"], alias_on_rename=o["alias_on_rename"],
                                mass_change_threshold=o["mass_change_threshold"],
                                allow_mass_change=o["allow_mass_change"],
                                stores=load_store_config(o["inventory"]) if o["inventory"] else None)
        extra = ({"credentials_dir": o["credentials_dir"], "hash_scheme": o["hash_scheme"], "window": o["window"]}
                 if write else {})
        _plan_and_maybe_apply(write, request=request, as_json=o["as_json"], diff=o["diff"], **extra,
                              connection_options=_connection_options(
                                  o["inventory"], o["ldap_url"], o["bind_dn"], o["bind_password_file"],
                                  o["ca_cert"], o["base_dn"], o["domain"]))


def accounts_plan(**options: Any) -> None:
    """Show what apply would change. Reads only; exit 2 on invalid input."""
    _plan_or_apply(False, options)


# `plan` is `apply` without writing: the same options, declared once (on apply), less
# the ones only a write uses. typer reads this signature (annotations evaluated).
_apply_signature = inspect.signature(accounts_apply, eval_str=True)
accounts_plan.__signature__ = _apply_signature.replace(  # type: ignore[attr-defined]
    parameters=[p for p in _apply_signature.parameters.values() if p.name not in _APPLY_ONLY])
accounts_app.command("plan")(accounts_plan)


@contextlib.contextmanager
def _directory_state(inventory: str | None, ldap_url: str | None, bind_dn: str | None,
                     bind_password_file: Path | None, ca_cert: Path | None,
                     base_dn: str | None) -> Iterator[tuple[Connection, DirectoryState]]:
    """A bound connection and what the directory holds now; unbound on the way out."""
    settings = resolve_settings(_connection_options(inventory, ldap_url, bind_dn, bind_password_file,
                                                    ca_cert, base_dn, None))
    connection = ldapio.connect(settings)
    try:
        yield connection, ldapio.read_state(connection, settings.base_dn)
    finally:
        connection.unbind()


def _read_directory(inventory: str | None, ldap_url: str | None, bind_dn: str | None,
                    bind_password_file: Path | None, ca_cert: Path | None, base_dn: str | None) -> DirectoryState:
    with _directory_state(inventory, ldap_url, bind_dn, bind_password_file, ca_cert, base_dn) as (_, state):
        return state


accounts_app.command("reset-password")(reset.accounts_reset_password)


@accounts_app.command("purge")
def accounts_purge(
    older_than: Annotated[int, typer.Option("--older-than", min=0, help="Days since the account was disabled.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; change nothing.")] = False,
    mailbox_exec: Annotated[str | None, typer.Option(
        "--mailbox-exec", help="Run mailbox removal through this prefix, e.g. 'podman exec qnprov-lab-mail1' "
        "or 'ssh root@mail1'. Without it the rm commands are printed for the operator.")] = None,
    inventory: InventoryOpt = None, ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None,
    bind_password_file: PasswordFileOpt = None, ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove disabled accounts (entry and mailbox) whose retention has passed."""
    with _user_errors(), _directory_state(inventory, ldap_url, bind_dn, bind_password_file, ca_cert,
                                          base_dn) as (connection, state):
        plan = purge.plan_purge(state, older_than, datetime.now(UTC))
        remover: purge.MailboxRemover
        printing = purge.PrintingRemover()
        remover = purge.CommandRemover(shlex.split(mailbox_exec)) if mailbox_exec else printing
        removed = 0
        if not dry_run:
            for item in plan.items:
                remover.remove(item.mailbox)  # mailbox first: a failure leaves the entry for a retry
                ldapio.delete_entries(connection, [item.dn])
                removed += 1
    with _user_errors():
        doc = {"candidates": [{"employee_id": i.employee_id, "mail": i.mail, "disabled_at": i.disabled_at,
                               "mailbox": str(i.mailbox)} for i in plan.items],
               "skipped": plan.skipped, "removed": removed, "dry_run": dry_run,
               "mailbox_commands": printing.commands}
        if as_json:
            print_json(doc, indent=None)
            return
        for item in plan.items:
            out.print(f"{'would remove' if dry_run else 'removed'} {item.mail} (disabled {item.disabled_at}, "
                      f"{item.mailbox})")
        for note in plan.skipped:
            err.print(f"skipped: {note}")
        if printing.commands:
            out.print("Run on the mail host to remove the mailboxes:")
            for command in printing.commands:
                out.print(f"  {command}")
        if not plan.items:
            out.print(f"No disabled account is older than {older_than} days.")


# --- agencies ---------------------------------------------------------------------------


@agency_app.command("add")
def agency_add(
    code: Annotated[str, typer.Argument(help="Stable agency code, e.g. STTTT.")],
    name: Annotated[str, typer.Option("--name", help="Full name of the agency.")],
    parent: Annotated[str | None, typer.Option("--parent", help="Code of the parent agency.")] = None,
    mail_domain: Annotated[str | None, typer.Option("--domain", help="The agency's own mail subdomain.")] = None,
    quota_mb: Annotated[int | None, typer.Option("--quota-mb", min=1, help="Default mailbox quota.")] = None,
    mx_host: Annotated[str | None, typer.Option("--mx-host", help="MX for the subdomain (mail.<primary>).")] = None,
    inventory: InventoryOpt = None, ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None,
    bind_password_file: PasswordFileOpt = None, ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
    domain: DomainOpt = None, as_json: JsonOpt = False,
) -> None:
    """Onboard an agency: OU, people and groups OUs, <code>-all list, <code>-admins group, quota."""
    from qnprov.directory.inputs import AGENCY_CODE, DOMAIN

    with _user_errors():
        if not AGENCY_CODE.match(code):
            raise ConfigError(f"agency code {code!r}: use 1-64 letters, digits, '-' or '_'")
        if mail_domain is not None:
            mail_domain = mail_domain.lower().rstrip(".")
            if not DOMAIN.match(mail_domain):
                raise ConfigError(f"--domain {mail_domain!r} is not a domain name")
        settings = resolve_settings(_connection_options(inventory, ldap_url, bind_dn, bind_password_file,
                                                        ca_cert, base_dn, domain))
        connection = ldapio.connect(settings)
        try:
            state = ldapio.read_state(connection, settings.base_dn)
            if parent and parent not in state.agencies:
                raise ConfigError(f"parent agency {parent!r} does not exist; add it first")
            if code in state.agencies or code.lower() in {c.lower() for c in state.agencies}:
                existing = next(c for c in state.agencies if c.lower() == code.lower())
                if existing != code:
                    raise ConfigError(f"agency {existing!r} already exists (codes ignore case)")
            agency = Agency(code=code, name=name, parent=parent, domain=mail_domain,
                            default_quota=quota_mb * 1024 * 1024 if quota_mb else None)
            entries = agency_entries(agency, settings.base_dn, settings.domain)
            if mail_domain:
                entries.insert(0, ldapio.domain_entry(settings.base_dn, mail_domain))
            written = ldapio.write_entries(connection, entries, skip_present=state.present_dns)
        finally:
            connection.unbind()
        records = (dns.agency_domain_records(mail_domain, mx_host=mx_host or f"mail.{settings.domain}",
                                             report_address=f"dmarc@{settings.domain}",
                                             primary_domain=settings.domain) if mail_domain else [])
        if as_json:
            print_json({"agency": code, "entries_written": written,
                        "dns": [{"name": r.name.rstrip("."), "type": r.type, "value": r.value} for r in records]},
                       indent=None)
            return
        out.print(f"Agency {code}: {written} entries written"
                  + (" (already complete)" if not written else "") + ".")
        if records:
            out.print(f"Publish these records for {mail_domain} before moving mail to it:")
            for record in records:
                out.print(f"  {record.zone_line()}    ; {record.purpose}")


@agency_app.command("list")
def agency_list(
    inventory: InventoryOpt = None, ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None,
    bind_password_file: PasswordFileOpt = None, ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Agencies in the directory with their account counts."""
    with _user_errors():
        state = _read_directory(inventory, ldap_url, bind_dn, bind_password_file, ca_cert, base_dn)
        counts: dict[str, list[int]] = {code: [0, 0] for code in state.agencies}
        for account in state.accounts.values():
            counts.setdefault(account.agency, [0, 0])[0 if account.status == "active" else 1] += 1
        rows = [{"code": code, "name": state.agencies[code].name if code in state.agencies else "",
                 "parent": state.agencies[code].parent if code in state.agencies else None,
                 "domain": state.agencies[code].domain if code in state.agencies else None,
                 "active": counts[code][0], "disabled": counts[code][1]} for code in sorted(counts)]
        if as_json:
            print_json(rows, indent=None)
            return
        table = Table(show_edge=False)
        for column in ("code", "name", "parent", "domain", "active", "disabled"):
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if row[c] is None else str(row[c])
                            for c in ("code", "name", "parent", "domain", "active", "disabled")))
        out.print(table)
