"""The ``qnprov`` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qnprov import __version__, argspec, lab, paths, runner, testbed
from qnprov.controls.cli import dns_app, report_app, verify_command
from qnprov.directory.cli import accounts_app, agency_app
from qnprov.errors import QnprovError
from qnprov.policy.cli import policy_app
from qnprov.policy.milter_cli import audit_app, milter_command, quarantine_app
from qnprov.ui import PlaybookProgress, console, host_table, out, print_json, report_failures

app = typer.Typer(help="Deploy, provision, police and verify the province's official mail system.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
lab_app = typer.Typer(help="The local lab: the production roles on systemd containers.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(accounts_app, name="accounts")
app.add_typer(agency_app, name="agency")
app.add_typer(policy_app, name="policy")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")
app.add_typer(dns_app, name="dns")
app.command("milter")(milter_command)
app.command("verify")(verify_command)

InventoryOpt = Annotated[str, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for machines.")]
LabInventoryOpt = Annotated[str | None, typer.Option(
    "-i", "--inventory", help="Lab inventory name or path (default: $QNPROV_LAB_INVENTORY, else lab).")]


def _lab_config(inventory: str | None) -> lab.LabConfig:
    return lab.load_lab_config(paths.resolve_inventory(inventory) if inventory else None)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit(0)


# Eager, so `qnprov --version` answers before click asks for a command ("Missing command.").
@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                                callback=_print_version)] = False) -> None:
    """Deploy, provision, police and verify the province's official mail system."""


def run_site(inventory: Path, *, check: bool = False, diff: bool = False, limit: str | None = None,
             tags: str | None = None, show_progress: bool = True, label: str = "deploy",
             vault_password_file: Path | None = None) -> runner.PlaybookResult:
    """Validate the inventory against the roles' specs, then run the site playbook."""
    argspec.require_valid_inventory(inventory, paths.SITE_PLAYBOOK, limit=limit)
    estimate = paths.state_dir().parent / f"tasks-{inventory.name}.count"
    progress = PlaybookProgress(label, estimate_file=estimate, enabled=show_progress)
    with progress.running():
        result = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=inventory, check=check, diff=diff,
                                     limit=limit, tags=tags, on_event=progress,
                                     vault_password_file=vault_password_file)
    if not check:
        progress.finish(result)
    return result


@app.command()
def deploy(
    inventory: InventoryOpt,
    check: Annotated[bool, typer.Option("--check", help="Dry run: report what would change.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show file differences.")] = False,
    limit: Annotated[str | None, typer.Option("--limit", help="Only these hosts (Ansible pattern).")] = None,
    tags: Annotated[str | None, typer.Option("--tags", help="Only tasks with these tags.")] = None,
    vault_password_file: Annotated[Path | None, typer.Option("--vault-password-file")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy (or with --check, preview) the mail system on an inventory's hosts."""
    inv = paths.resolve_inventory(inventory)
    result = run_site(inv, check=check, diff=diff, limit=limit, tags=tags, show_progress=not as_json,
                      vault_password_file=vault_password_file)
    if as_json:
        print_json(result.as_json())
    else:
        out.print(host_table(result.hosts, title=f"{'check' if check else 'deploy'}: {inv.name} "
                                                  f"({result.seconds:.0f}s)"))
        report_failures(result)
    if result.failed:
        raise typer.Exit(2 if result.rc == 0 else max(result.rc, 1))


def _print_summary(config: lab.LabConfig, doc: dict[str, object], timings: dict[str, float]) -> None:
    table = Table(title="qnprov lab", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, endpoint in config.endpoints().items():
        table.add_row(name, endpoint)
    table.add_row("domain", config.domain)
    table.add_row("accounts", ", ".join(a.address for a in config.accounts))
    table.add_row("passwords", "qnprov lab status --json")
    table.add_row("lab CA", str(config.ca_cert))
    table.add_row("timings", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    out.print(table)


@lab_app.command("up")
def lab_up(
    rebuild_image: Annotated[bool, typer.Option("--rebuild-image", help="Rebuild the base image.")] = False,
    skip_smoke: Annotated[bool, typer.Option("--skip-smoke", help="Do not run the smoke test.")] = False,
    inventory: LabInventoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the image if needed, start the lab hosts, deploy, seed and smoke-test."""
    config = _lab_config(inventory)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with console.status("preparing podman on this host"):
        testbed.prepare_host()
    timings["host"] = time.monotonic() - started
    mark = time.monotonic()
    with console.status("base image"):
        built = testbed.build_image(force=rebuild_image, progress=lambda m: console.log(m))
    timings["image"] = time.monotonic() - mark
    if built:
        console.log(f"built {testbed.IMAGE_REF} (version {testbed.IMAGE_VERSION})")
    mark = time.monotonic()
    lab.ensure_secrets(config)
    for host in config.hosts:
        if lab.ensure_container(host):
            console.log(f"started container {host.container}")
    timings["containers"] = time.monotonic() - mark
    mark = time.monotonic()
    result = run_site(config.inventory, label="lab converge", show_progress=not as_json)
    timings["converge"] = time.monotonic() - mark
    if not as_json:
        out.print(host_table(result.hosts, title="converge"))
    if result.failed:
        report_failures(result)
        raise typer.Exit(1)
    doc = lab.status(config)
    if not skip_smoke:
        mark = time.monotonic()
        smoke = lab.smoke(config)
        timings["smoke"] = time.monotonic() - mark
        doc["smoke"] = {"sender": smoke.sender, "recipient": smoke.recipient,
                        "delivery_seconds": round(smoke.delivery_seconds, 2)}
    timings["total"] = time.monotonic() - started
    doc["timings"] = {k: round(v, 1) for k, v in timings.items()}
    doc["changed"] = sum(h.changed for h in result.hosts.values())
    lab.write_status_file(config, doc)
    if as_json:
        print_json(doc)
    else:
        _print_summary(config, doc, timings)


@lab_app.command("status")
def lab_status(inventory: LabInventoryOpt = None, as_json: JsonOpt = False) -> None:
    """Show the lab's endpoints, accounts and service states."""
    config = _lab_config(inventory)
    doc = lab.status(config)
    if as_json:
        print_json(doc)
        return
    table = Table(title=f"qnprov lab ({'running' if doc['running'] else 'not running'})", title_justify="left")
    table.add_column("host")
    table.add_column("container")
    table.add_column("services")
    for host in doc["hosts"]:
        table.add_row(host["name"], f"{host['container']} ({host['state']})",
                      " ".join(f"{k}={v}" for k, v in host["services"].items()))
    out.print(table)
    for name, endpoint in doc["endpoints"].items():
        out.print(f"  {name:12} {endpoint}")
    out.print(f"  CA           {doc['ca_cert']}")


@lab_app.command("smoke")
def lab_smoke(inventory: LabInventoryOpt = None, as_json: JsonOpt = False) -> None:
    """Submit a message as one demo account and fetch it over IMAP as another."""
    config = _lab_config(inventory)
    result = lab.smoke(config)
    doc = {"ok": True, "sender": result.sender, "recipient": result.recipient,
           "submit_seconds": round(result.submit_seconds, 2),
           "delivery_seconds": round(result.delivery_seconds, 2)}
    if as_json:
        print_json(doc)
    else:
        out.print(f"smoke ok: {result.sender} -> {result.recipient} "
                  f"(submitted in {result.submit_seconds:.2f}s, in INBOX after {result.delivery_seconds:.2f}s)")


@lab_app.command("down")
def lab_down(purge: Annotated[bool, typer.Option("--purge", help="Also delete secrets, CA and state.")] = False,
             inventory: LabInventoryOpt = None) -> None:
    """Remove the lab containers (and with --purge, its state)."""
    config = _lab_config(inventory)
    removed = lab.down(config, purge=purge)
    out.print(f"removed: {', '.join(removed) or 'nothing'}" + (f"; purged {config.state}" if purge else ""))


@app.command("image")
def image(rebuild: Annotated[bool, typer.Option("--rebuild")] = False) -> None:
    """Prepare podman on this host and build the base image if it is missing."""
    report = testbed.prepare_host()
    built = testbed.build_image(force=rebuild, progress=lambda m: console.log(m))
    out.print(f"podman ready (config {'updated' if report.config_changed else 'unchanged'}); "
              f"image {testbed.IMAGE_REF} {'built' if built else 'up to date'}")


def main() -> None:
    """Entry point: user errors become one line and an exit code, never a traceback."""
    try:
        app()
    except QnprovError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
