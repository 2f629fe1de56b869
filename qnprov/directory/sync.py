"""One sync run, edge to edge: read inputs and directory, validate, plan, guard, apply.

The CLI is a thin layer over these functions; tests and the benchmark call them too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ldap3 import Connection

from qnprov.directory import inputs, ldapio
from qnprov.directory.models import Account, DirectoryState, Plan, RowError
from qnprov.directory.names import DEFAULT_ADDRESS_PATTERN, check_pattern
from qnprov.directory.planner import Desired, PlanOptions, mass_change_refusal, plan
from qnprov.directory.purge import generalized_time
from qnprov.directory.wire import LdapPipeline
from qnprov.errors import ConfigError, InputError
from qnprov.policy.domains import is_freemail
from qnprov.stores.config import StoreConfig

DEFAULT_MASS_CHANGE_THRESHOLD = 0.05


@dataclass(frozen=True)
class UpstreamSource:
    settings: ldapio.LdapSettings
    search_base: str
    search_filter: str = "(objectClass=person)"
    field_map: str = inputs.DEFAULT_SOURCE_MAP


@dataclass(frozen=True)
class SyncRequest:
    agencies_file: Path | None = None
    roster_file: Path | None = None
    upstream: UpstreamSource | None = None
    partial: bool = False
    skip_invalid: bool = False
    address_pattern: str = DEFAULT_ADDRESS_PATTERN
    alias_on_rename: bool = False
    mass_change_threshold: float = DEFAULT_MASS_CHANGE_THRESHOLD
    allow_mass_change: bool = False
    # Mail stores from the inventory (qnprov_stores, qnprov_agency_stores); None: off.
    stores: StoreConfig | None = None


def read_upstream_rows(source: UpstreamSource) -> list[inputs.RawRow]:
    field_map = inputs.parse_field_map(source.field_map)
    connection = ldapio.connect(source.settings)
    try:
        entries = LdapPipeline(connection).paged_search(source.search_base, source.search_filter,
                                                        sorted(set(field_map.values())))
        return inputs.rows_from_source_entries((e.attributes for e in entries), field_map)
    finally:
        connection.unbind()


@dataclass
class _ParsedInput:
    agency_rows: list[inputs.RawRow]
    accounts: list[Account]
    errors: list[RowError]


def _parse_input(request: SyncRequest) -> _ParsedInput:
    """Everything about the input that does not depend on the directory."""
    if (request.roster_file is None) == (request.upstream is None):
        raise ConfigError("give exactly one of --roster or --source-url")
    try:
        check_pattern(request.address_pattern)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    agency_rows = (inputs.read_table(request.agencies_file, inputs.AGENCY_COLUMNS)
                   if request.agencies_file is not None else [])
    rows = (inputs.read_roster_rows(request.roster_file) if request.roster_file is not None
            else read_upstream_rows(request.upstream))  # type: ignore[arg-type]
    accounts, errors = inputs.validate_roster(rows, None, is_freemail)
    return _ParsedInput(agency_rows, accounts, errors)


def _desired(parsed: _ParsedInput, state: DirectoryState) -> Desired:
    desired = Desired()
    desired.agencies, agency_errors = inputs.validate_agencies(parsed.agency_rows, state.agencies)
    known = set(state.agencies) | {a.code for a in desired.agencies}
    desired.accounts, row_errors = inputs.check_agencies(parsed.accounts, parsed.errors, known)
    desired.errors = [*agency_errors, *row_errors]
    desired.errors.extend(RowError(0, "directory", problem) for problem in state.problems)
    return desired


def load_desired(request: SyncRequest, state: DirectoryState) -> Desired:
    """Validate all input against what the directory already knows; nothing is written here."""
    return _desired(_parse_input(request), state)


def make_plan(connection: Connection, settings: ldapio.LdapSettings, request: SyncRequest,
              now: datetime | None = None) -> tuple[Plan, DirectoryState]:
    # The input is parsed and checked in a thread while the directory is read: slapd's
    # half of the read then overlaps with the parsing instead of following it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        parsing = pool.submit(_parse_input, request)
        try:
            state = ldapio.read_state(connection, settings.base_dn)
        finally:
            parsed = parsing.result()
    desired = _desired(parsed, state)
    options = PlanOptions(default_domain=settings.domain, now=generalized_time(now or datetime.now(UTC)),
                          partial=request.partial, address_pattern=request.address_pattern,
                          alias_on_rename=request.alias_on_rename, stores=request.stores)
    return plan(desired, state, options), state


def refusal(plan_: Plan, request: SyncRequest) -> InputError | None:
    """Why this plan must not be applied, or None."""
    if plan_.errors and not request.skip_invalid:
        return InputError(f"{len(plan_.errors)} invalid row(s); nothing written (fix them or use --skip-invalid)",
                          [e.as_dict() for e in plan_.errors])
    if any(e.field == "directory" for e in plan_.errors):
        return InputError("the directory itself is inconsistent; fix it first",
                          [e.as_dict() for e in plan_.errors])
    if not request.allow_mass_change:
        reason = mass_change_refusal(plan_, request.mass_change_threshold)
        if reason:
            return InputError(reason, [e.as_dict() for e in plan_.errors])
    return None
