"""Options and error handling shared by the directory commands (``qnprov accounts`` / ``agency``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from qnprov.cliout import user_errors
from qnprov.directory.inputs import DEFAULT_SOURCE_MAP
from qnprov.directory.models import Plan
from qnprov.directory.settings import ConnectionOptions
from qnprov.errors import ConfigError, InputError, QnprovError

# --- shared options -------------------------------------------------------------------
InventoryOpt = Annotated[str | None, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")]
LdapUrlOpt = Annotated[str | None, typer.Option(
    "--ldap-url", help="ldaps://HOST or ldap://HOST (StartTLS); several, blank- or comma-separated, are tried "
                       "in order when one cannot be reached.")]
BindDnOpt = Annotated[str | None, typer.Option("--bind-dn", help="Default: cn=qnprov,ou=services,<base>.")]
PasswordFileOpt = Annotated[Path | None, typer.Option("--bind-password-file", help="File holding the password.")]
CaCertOpt = Annotated[Path | None, typer.Option("--ca-cert", help="CA bundle that signed the LDAP server.")]
BaseDnOpt = Annotated[str | None, typer.Option("--base-dn", help="DIT suffix (default: from the inventory).")]
DomainOpt = Annotated[str | None, typer.Option("--primary-domain", help="Primary mail domain (default: inventory).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
AgenciesOpt = Annotated[Path | None, typer.Option("--agencies", help="agencies.csv or .xlsx (code,name,parent).")]
RosterOpt = Annotated[Path | None, typer.Option("--roster", help="roster.csv or .xlsx "
                                                "(employee_id,agency,full_name,title,status).")]
SourceUrlOpt = Annotated[str | None, typer.Option("--source-url", help="Upstream HR directory (LDAP/AD).")]
SourceBaseOpt = Annotated[str | None, typer.Option("--source-base", help="Search base in the upstream.")]
SourceFilterOpt = Annotated[str, typer.Option("--source-filter", help="Upstream filter.")]
SourceMapOpt = Annotated[str, typer.Option("--source-map", help="FIELD=attribute,... for the roster fields.")]
DEFAULT_MAP = DEFAULT_SOURCE_MAP
SourceBindOpt = Annotated[str | None, typer.Option("--source-bind-dn")]
SourcePasswordOpt = Annotated[Path | None, typer.Option("--source-bind-password-file")]
PartialOpt = Annotated[bool, typer.Option("--partial", help="Only adds and updates; nobody is disabled.")]
SkipInvalidOpt = Annotated[bool, typer.Option("--skip-invalid", help="Apply the valid rows, report the rest.")]
PatternOpt = Annotated[str, typer.Option("--address-pattern", help="Local part pattern for new addresses.")]
AliasOpt = Annotated[bool, typer.Option("--alias-on-rename", help="Add an alias for a renamed person.")]
ThresholdOpt = Annotated[float, typer.Option("--mass-change-threshold",
                                             help="Share of accounts disabled/moved that needs confirmation.")]
AllowMassOpt = Annotated[bool, typer.Option("--allow-mass-change", help="Apply a plan above the threshold.")]
DiffOpt = Annotated[bool, typer.Option("--diff", help="List every change with its attributes.")]


class _RefusedPlan(InputError):
    """A plan that must not be applied; under ``--json`` its counts go out with the reason."""

    def __init__(self, problem: InputError, plan: Plan) -> None:
        super().__init__(str(problem), problem.errors)
        self.document = {**plan.summary(applied=False), "message": str(problem)}


def _json_error(exc: QnprovError) -> dict[str, Any] | None:
    """The ``--json`` document for an error: a refused plan's counts, or empty counts and the rows."""
    if isinstance(exc, _RefusedPlan):
        return exc.document
    if isinstance(exc, InputError):
        return {"create": 0, "modify": 0, "move": 0, "disable": 0, "enable": 0,
                "errors": exc.errors, "applied": False, "message": str(exc)}
    return None


def _user_errors(as_json: bool = False) -> contextlib.AbstractContextManager[None]:
    """A QnprovError becomes one line (under ``--json``, the JSON document) and its exit code."""
    return user_errors(_json_error if as_json else None)


def _connection_options(inventory: str | None, ldap_url: str | None, bind_dn: str | None,
                        bind_password_file: Path | None, ca_cert: Path | None, base_dn: str | None,
                        domain: str | None) -> ConnectionOptions:
    if not inventory and not ldap_url:
        raise ConfigError("give -i INVENTORY or --ldap-url")
    return ConnectionOptions(inventory=inventory, ldap_url=ldap_url, base_dn=base_dn, bind_dn=bind_dn,
                             bind_password_file=bind_password_file, ca_cert=ca_cert, domain=domain)
