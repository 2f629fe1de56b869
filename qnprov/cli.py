"""The ``qnprov`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qnprov import __version__, cliout, paths, testbed
from qnprov.backup.cli import backup_app, restore_app
from qnprov.cliout import JsonOpt, err, out, print_json
from qnprov.controls.cli import dns_app, report_app, verify_command
from qnprov.directory.cli import accounts_app, agency_app
from qnprov.lab_cli import lab_app
from qnprov.policy.cli import policy_app
from qnprov.policy.milter_cli import audit_app, milter_command, quarantine_app
from qnprov.push.cli import push_app
from qnprov.reporting.cli import compliance_command
from qnprov.stores.cli import store_app
from qnprov.ui import host_table, report_failures, run_site

app = typer.Typer(help="Deploy, provision, police and verify the province's official mail system.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(lab_app, name="lab")
app.add_typer(accounts_app, name="accounts")
app.add_typer(agency_app, name="agency")
app.add_typer(policy_app, name="policy")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(audit_app, name="audit")
report_app.command("compliance")(compliance_command)
app.add_typer(report_app, name="report")
app.add_typer(dns_app, name="dns")
app.add_typer(store_app, name="store")
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")
app.add_typer(push_app, name="push")
app.command("milter")(milter_command)
app.command("verify")(verify_command)

InventoryOpt = Annotated[str, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")]


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        cliout.leave(0)


# Eager, so `qnprov --version` answers before click asks for a command ("Missing command.").
@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                                callback=_print_version)] = False) -> None:
    """Deploy, provision, police and verify the province's official mail system."""


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
        # ansible-playbook's own code (2: a host failed, 4: unreachable), never 0 for a failure.
        cliout.leave(2 if result.rc == 0 else max(result.rc, 1))


@app.command("image")
def image(rebuild: Annotated[bool, typer.Option("--rebuild")] = False) -> None:
    """Prepare podman on this host and build the base image if it is missing."""
    report = testbed.prepare_host()
    built = testbed.build_image(force=rebuild, progress=lambda m: err.log(m))
    out.print(f"podman ready (config {'updated' if report.config_changed else 'unchanged'}); "
              f"image {testbed.IMAGE_REF} {'built' if built else 'up to date'}")


def main() -> None:
    """Entry point: user errors become one line and an exit code, never a traceback."""
    cliout.main(app)
