"""Thin CLI over the SMTP-time parts: ``qnprov milter``, ``qnprov quarantine``, ``qnprov audit``.

The root CLI mounts these in ``qnprov/cli.py``: ``app.command("milter")(milter_command)``,
``app.add_typer(quarantine_app, name="quarantine")``, ``app.add_typer(audit_app, name="audit")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from qnprov.cliout import err, finish, leave, out, print_json, user_errors
from qnprov.errors import ConfigError, InputError
from qnprov.policy.agencies import StaticAgencyMap
from qnprov.policy.audit import AuditLog, iter_audit_records, verify_audit_log
from qnprov.policy.audit_report import summarise
from qnprov.policy.quarantine import Quarantine, executor_for, hold_reasons_from_audit, quarantine_event

# --- qnprov milter -----------------------------------------------------------


@user_errors()
def milter_command(
    socket: Annotated[str, typer.Option("--socket", help="unix:/path or inet:port@host")] = (
        "unix:/run/qnprov/milter.sock"
    ),
    workers: Annotated[int, typer.Option("--workers", help="Evaluator processes (0: evaluate in-process)")] = 2,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Rule bundle (default: packaged)")] = None,
    overrides: Annotated[Path | None, typer.Option("--overrides", help="Site overrides YAML")] = None,
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="Audit file, or a directory for daily files")
    ] = None,
    audit_fsync: Annotated[str, typer.Option("--audit-fsync", help="always|never")] = "always",
    agency_map: Annotated[
        Path | None, typer.Option("--agency-map", help="YAML address/@domain -> agency code")
    ] = None,
    blocklist: Annotated[
        Path | None, typer.Option("--blocklist", help="Emergency block list YAML (qnprov push block)")
    ] = None,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest message inspected, bytes")] = 50 * 1024 * 1024,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per message evaluation")] = 30.0,
    on_error: Annotated[str, typer.Option("--on-error", help="tempfail|accept|reject")] = "tempfail",
    on_oversize: Annotated[str, typer.Option("--on-oversize", help="quarantine|reject|tempfail")] = "quarantine",
    socket_umask: Annotated[
        str, typer.Option("--socket-umask", help="Octal umask for the unix socket (007: owner+group)")
    ] = "007",
    reinject_daemon: Annotated[
        list[str] | None,
        typer.Option("--reinject-daemon", help="{daemon_name} of the re-injection listener (repeatable)"),
    ] = None,
    check_config: Annotated[
        bool, typer.Option("--check-config", help="Only validate bundle, overrides, agency map, block list; exit")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="With --check-config: print the policy in force as JSON")
    ] = False,
) -> None:
    """Run the policy milter (SIGHUP reloads the bundle; SIGTERM stops)."""
    # Imported here, not at the top: the milter package loads libmilter and the policy engine
    # (about a second), which every other `qnprov` command would pay for at start-up.
    from qnprov.policy.milter import MilterSettings, load_engine, parse_reinject_daemons, run_milter
    from qnprov.policy.milter.blocklist import BlockList

    if on_error not in ("tempfail", "accept", "reject"):
        raise ConfigError(f"--on-error must be tempfail, accept or reject, got {on_error!r}")
    if on_oversize not in ("quarantine", "reject", "tempfail"):
        raise ConfigError(f"--on-oversize must be quarantine, reject or tempfail, got {on_oversize!r}")
    try:
        umask = int(socket_umask, 8)
    except ValueError:
        raise ConfigError(f"--socket-umask must be octal, got {socket_umask!r}") from None
    if audit_fsync not in ("always", "never"):
        raise ConfigError(f"--audit-fsync must be always or never, got {audit_fsync!r}")
    settings = MilterSettings(
        socket=socket, workers=workers, bundle=bundle, overrides=overrides, audit_log=audit_log,
        audit_fsync=audit_fsync,  # type: ignore[arg-type]
        agency_map=agency_map, blocklist=blocklist, max_body=max_body, timeout=timeout,
        on_error=on_error,  # type: ignore[arg-type]
        on_oversize=on_oversize,  # type: ignore[arg-type]
        reinject_daemons=parse_reinject_daemons(reinject_daemon or ["reinject"]),
        socket_umask=umask,
    )
    if check_config:
        engine = load_engine(bundle, overrides)
        if agency_map:
            StaticAgencyMap.from_file(agency_map)
        blocks = BlockList.load(blocklist)
        if json_out:
            decision = engine.policy.bundle.decision
            doc = {
                "version": engine.version,
                "rules": [{"id": r.id, "clause": r.clause, "action": r.action} for r in engine.rules],
                "local_domains": sorted(engine.local_domains),
                "decision": decision.model_dump(mode="json"),
                "computed_effective_date": (decision.computed_effective_date.isoformat()
                                            if decision.computed_effective_date else None),
            }
            print_json(doc, indent=None)
            return
        out.print(f"ok: policy {engine.version}, {len(engine.rules)} rules, local domains "
                  f"{', '.join(sorted(engine.local_domains))}"
                  + (f"; block list {len(blocks.blocks)} entries" if blocklist else ""))
        return
    leave(run_milter(settings))


# --- qnprov quarantine -------------------------------------------------------

quarantine_app = typer.Typer(help="Messages the policy held (Postfix hold queue).", no_args_is_help=True)
ContainerOpt = Annotated[str | None, typer.Option("--container", help="Run inside this podman container (lab)")]
HostOpt = Annotated[str | None, typer.Option("--host", help="Run on this host over ssh")]
ConfigDirOpt = Annotated[str | None, typer.Option("--config-dir", help="Postfix config directory (postqueue -c)")]
AuditOpt = Annotated[Path | None, typer.Option("--audit-log", help="Audit trail: reasons in list, events on change")]


def _quarantine(container: str | None, host: str | None, config_dir: str | None) -> Any:

    return Quarantine(executor_for(container, host), config_dir=config_dir)


@quarantine_app.command("list")
@user_errors()
def quarantine_list(
    container: ContainerOpt = None,
    host: HostOpt = None,
    config_dir: ConfigDirOpt = None,
    audit_log: AuditOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List held messages."""

    reasons = hold_reasons_from_audit(audit_log) if audit_log else None
    held = _quarantine(container, host, config_dir).held(reasons=reasons)
    if as_json:
        print_json([m.to_json() for m in held])
        return
    table = Table(title=f"held messages: {len(held)}", title_justify="left")
    for column in ("queue id", "arrived", "size", "sender", "recipients", "reason"):
        table.add_column(column)
    for message in held:
        table.add_row(message.queue_id, message.arrival_time.strftime("%Y-%m-%d %H:%M"), str(message.size),
                      message.sender, ", ".join(message.recipients), message.reason or "")
    out.print(table)


def _change(action: Literal["release", "delete"], queue_ids: list[str], container: str | None, host: str | None,
            config_dir: str | None, audit_log: Path | None) -> None:

    quarantine = _quarantine(container, host, config_dir)
    done, missing = (quarantine.release if action == "release" else quarantine.delete)(queue_ids)
    if audit_log and done:

        with AuditLog(audit_log) as log:
            for queue_id in done:
                log.append(quarantine_event(action, queue_id))
    for queue_id in done:
        out.print(f"{action}d {queue_id}")
    for queue_id in missing:
        err.print(f"[yellow]not held:[/yellow] {queue_id}")
    finish(not missing)


@quarantine_app.command("release")
@user_errors()
def quarantine_release(
    queue_ids: Annotated[list[str], typer.Argument(help="Queue ids to release")],
    container: ContainerOpt = None,
    host: HostOpt = None,
    config_dir: ConfigDirOpt = None,
    audit_log: AuditOpt = None,
) -> None:
    """Release held messages (postsuper -H): they continue to their recipients."""
    _change("release", queue_ids, container, host, config_dir, audit_log)


@quarantine_app.command("delete")
@user_errors()
def quarantine_delete(
    queue_ids: Annotated[list[str], typer.Argument(help="Queue ids to delete")],
    container: ContainerOpt = None,
    host: HostOpt = None,
    config_dir: ConfigDirOpt = None,
    audit_log: AuditOpt = None,
) -> None:
    """Delete held messages (postsuper -d ID hold): only from the hold queue."""
    _change("delete", queue_ids, container, host, config_dir, audit_log)


# --- qnprov audit --------------------------------------------------------------

audit_app = typer.Typer(help="The hash-chained audit trail of policy decisions.", no_args_is_help=True)


@audit_app.command("verify")
@user_errors()
def audit_verify(
    log: Annotated[Path, typer.Argument(help="Audit file or directory of daily files")],
    expect_head: Annotated[str | None, typer.Option("--expect-head", help="Last hash recorded elsewhere")] = None,
    require_genesis: Annotated[bool, typer.Option("--require-genesis")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the hash chain; exit 1 naming the first bad line."""

    result = verify_audit_log(log, expected_head=expect_head, require_genesis=require_genesis)
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        out.print(f"ok: {result.records} records, head {result.head}")
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}")
    else:
        err.print(f"[red]TAMPERED:[/red] {result.bad_file} line {result.bad_line}: {result.reason}")
    finish(result.ok)


@audit_app.command("report")
@user_errors()
def audit_report(
    log: Annotated[Path, typer.Argument(help="Audit file or directory of daily files")],
    by: Annotated[str, typer.Option("--by", help="agency|rule")] = "agency",
    since: Annotated[str | None, typer.Option("--since", help="ISO time, inclusive")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time, exclusive")] = None,
    include_accept: Annotated[bool, typer.Option("--include-accept")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What was blocked or flagged, per agency or per rule, and when (Article 2)."""

    if by not in ("agency", "rule"):
        raise InputError(f"--by must be agency or rule, got {by!r}")
    try:
        rows = summarise(iter_audit_records(log), by=by, since=since, until=until,  # type: ignore[arg-type]
                         include_accept=include_accept)
    except ValueError as exc:
        raise InputError(f"{log}: not an audit log ({exc})") from exc
    if as_json:
        print_json([row.__dict__ for row in rows])
        return
    table = Table(title=f"policy events by {by}", title_justify="left")
    columns = ("agency", "rule", "clause", "action", "count", "first", "last")
    for column in columns if by == "agency" else columns[1:]:
        table.add_column(column, justify="right" if column == "count" else "left")
    for row in rows:
        cells = (row.rule, row.clause, row.action, str(row.count), row.first, row.last)
        table.add_row(*((row.key, *cells) if by == "agency" else cells))
    out.print(table)


@audit_app.command("import-ratelimit")
@user_errors()
def audit_import_ratelimit(
    log: Annotated[Path, typer.Argument(help="Audit file or directory of daily files")],
    cursor_file: Annotated[Path, typer.Option("--cursor-file", help="Last journal entry imported")],
) -> None:
    """Append the outbound limits' journal events (rspamd, issue 13) to the audit trail."""

    from qnprov.policy.ratelimit_audit import import_journal

    out.print(f"imported {import_journal(log, cursor_file)} rate-limit events")


# --- on the mail host ------------------------------------------------------------
# The mail host gets qnprov without the controller stack (no ansible), so the full
# `qnprov` CLI does not run there. `python -m qnprov.policy.milter_cli` offers the
# host-side commands: `milter` (the systemd unit), `audit verify|report` and
# `quarantine list|release|delete` (local execution).
host_app = typer.Typer(help="qnprov on the mail host: the milter, its audit trail and quarantine.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
host_app.command("milter")(milter_command)
host_app.add_typer(audit_app, name="audit")
host_app.add_typer(quarantine_app, name="quarantine")

if __name__ == "__main__":
    host_app()
