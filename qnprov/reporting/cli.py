"""``qnprov report compliance``: the fleet's audit trails as one report (mounted by the root CLI).

``python -m qnprov.reporting.cli compliance ...`` runs the same command without the root
CLI, whose other rooms need the controller's stack (ansible-runner): the ``reporting``
role's monthly service runs it so on a mail host, in the milter's virtualenv.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from qnprov import cliout, paths
from qnprov.cliout import err, finish, user_errors
from qnprov.directory.settings import ConnectionOptions
from qnprov.errors import ConfigError, InputError
from qnprov.reporting import collect, compliance, directoryview, mailing, render


class _Format(enum.StrEnum):
    html = "html"
    json = "json"
    csv = "csv"


class _Lang(enum.StrEnum):
    vi = "vi"
    en = "en"


@user_errors()
def compliance_command(
    inventory: Annotated[str | None, typer.Option("-i", "--inventory",
                                                  help="Inventory (lab name or path): its mta hosts' trails "
                                                       "and its directory.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="First day (YYYY-MM-DD, UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Day after the last (YYYY-MM-DD, exclusive).")] = None,
    month: Annotated[str | None, typer.Option("--month", help="YYYY-MM or 'previous' instead of --since/--until.")]
    = None,
    agency: Annotated[str | None, typer.Option("--agency", help="Only this agency's events and accounts.")] = None,
    fmt: Annotated[_Format, typer.Option("--format", help="html, json or csv.")] = _Format.html,
    lang: Annotated[_Lang, typer.Option("--lang", help="vi (default) or en.")] = _Lang.vi,
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Write here (a directory: a dated file in it); "
                                                     "default stdout.")] = None,
    trail: Annotated[list[str] | None, typer.Option("--trail", help="[HOST=]PATH of a local trail (file or "
                                                    "directory) instead of fetching; repeatable.")] = None,
    no_directory: Annotated[bool, typer.Option("--no-directory", help="Do not read the directory.")] = False,
    ldap_url: Annotated[str | None, typer.Option("--ldap-url", help="Directory URL, as for qnprov accounts "
                                                 "(default: the inventory's).")] = None,
    bind_dn: Annotated[str | None, typer.Option("--bind-dn", help="Reader identity (default: cn=qnprov).")] = None,
    bind_password_file: Annotated[Path | None, typer.Option("--bind-password-file",
                                                            help="File holding its password.")] = None,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert", help="CA bundle of the LDAP server.")] = None,
    base_dn: Annotated[str | None, typer.Option("--base-dn", help="DIT suffix (default: the inventory's).")] = None,
    mail_to: Annotated[list[str] | None, typer.Option("--mail-to", help="Also mail the report to this address "
                                                      "(repeatable).")] = None,
    mail_from: Annotated[str, typer.Option("--mail-from", help="Sender of the mailed report.")]
    = "qnprov-reports@localhost",
    smtp: Annotated[str, typer.Option("--smtp", help="MTA that takes the mailed report (HOST[:PORT]).")]
    = "127.0.0.1:25",
) -> None:
    """Compliance report over the MTAs' audit trails (exit 1 when a chain is broken or a host missing)."""
    start, end = compliance.parse_period(since, until, month)
    inv = paths.resolve_inventory(inventory) if inventory else None
    if trail:
        trails = [collect.parse_trail(spec) for spec in trail]
    elif inv is not None:
        err.print(f"collecting audit trails {start} – {end} from group {collect.MTA_GROUP} of {inv}")
        trails = collect.fetch_trails(inv, start, end)
    else:
        raise InputError("give -i INVENTORY (fetch from its mta hosts) or --trail PATH")
    if (inventory or ldap_url) and not no_directory:
        directory = directoryview.read_directory(ConnectionOptions(
            inventory=inventory, ldap_url=ldap_url, base_dn=base_dn, bind_dn=bind_dn,
            bind_password_file=bind_password_file, ca_cert=ca_cert))
    else:
        directory = directoryview.unavailable("--no-directory" if no_directory else "no inventory or --ldap-url")
    if not directory.available:
        err.print(f"directory not read: {directory.reason}", markup=False)
    document = compliance.build_document(trails, start, end, agency=agency, directory=directory)
    text = render.render(document, fmt.value, lang.value)
    name = f"compliance-{start}_{end}{'-' + agency if agency else ''}.{fmt.value}"
    if output is None:
        if not mail_to:
            sys.stdout.write(text)
    else:
        target = output / name if output.is_dir() else output
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {target}: {exc.strerror}") from exc
        err.print(f"wrote {target}", markup=False)
    if mail_to:  # after the file is written: a mail failure loses no report
        mailing.send(mailing.report_message(text, fmt=fmt.value, filename=name, period=f"{start} – {end}",
                                            agency=agency, lang=lang.value, sender=mail_from,
                                            recipients=mail_to), smtp)
        err.print(f"mailed {name} to {', '.join(mail_to)}", markup=False)
    for host in document["hosts"]:
        if not host["ok"]:
            where = f" at {host['bad_file']}:{host['bad_line']}" if host["bad_line"] else ""
            err.print(f"audit chain of {host['host']}{where}: {host['reason']}", markup=False)
    finish(compliance.all_chains_intact(document))


reporting_app = typer.Typer(help="Compliance reports.", no_args_is_help=True, add_completion=False,
                            pretty_exceptions_enable=False)
reporting_app.command("compliance")(compliance_command)


@reporting_app.callback()
def _reporting_group() -> None:
    """Compliance reports (a callback keeps ``compliance`` a named sub-command)."""


if __name__ == "__main__":
    cliout.main(reporting_app)
