"""The directory's view for a compliance report: agencies, account counts and states.

Pure over a :class:`~qnprov.directory.models.DirectoryState`; :func:`read_directory`
is the one edge that connects (the provisioning connection of ``qnprov accounts``). A
report without the directory still renders and says why the view is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qnprov.directory.models import DirectoryState
from qnprov.directory.settings import ConnectionOptions
from qnprov.errors import QnprovError

#: Account hygiene figures that need Dovecot (last login, quota use), not the directory.
MISSING_HYGIENE = ("never_logged_in", "over_90_percent_quota")


@dataclass(frozen=True)
class AgencyAccounts:
    name: str
    total: int = 0
    active: int = 0
    disabled: int = 0


@dataclass(frozen=True)
class DirectoryView:
    available: bool
    reason: str | None = None
    agencies: dict[str, AgencyAccounts] = field(default_factory=dict)
    #: Every address of an account (mail and aliases, lower case) -> its agency code.
    address_agency: dict[str, str] = field(default_factory=dict)
    #: Addresses of accounts that are not active -> agency code.
    disabled_addresses: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"available": self.available, "reason": self.reason,
                "missing_hygiene": list(MISSING_HYGIENE)}


def unavailable(reason: str) -> DirectoryView:
    return DirectoryView(available=False, reason=reason)


def view_from_state(state: DirectoryState) -> DirectoryView:
    counts: dict[str, list[int]] = {}
    address_agency: dict[str, str] = {}
    disabled: dict[str, str] = {}
    for account in state.accounts.values():
        code = account.agency_code or account.agency
        row = counts.setdefault(code, [0, 0, 0])
        row[0] += 1
        is_active = account.status == "active"
        row[1 if is_active else 2] += 1
        for address in (account.mail, *account.aliases):
            if address:
                address_agency[address.lower()] = code
                if not is_active:
                    disabled[address.lower()] = code
    agencies = {code: AgencyAccounts(agency.name, *counts.get(code, [0, 0, 0]))
                for code, agency in state.agencies.items()}
    for code, row in counts.items():
        agencies.setdefault(code, AgencyAccounts(code, *row))
    return DirectoryView(True, None, agencies, address_agency, disabled)


def read_directory(options: ConnectionOptions) -> DirectoryView:
    """The directory's view through the provisioning connection (as ``qnprov accounts``), or why not."""
    from ldap3.core.exceptions import LDAPException

    from qnprov.directory.ldapio import connect, read_state
    from qnprov.directory.settings import resolve_settings

    try:
        settings = resolve_settings(options)
        connection = connect(settings)
        try:
            state = read_state(connection, settings.base_dn)
        finally:
            connection.unbind()
    except (QnprovError, LDAPException, OSError) as exc:
        return unavailable(str(exc))
    return view_from_state(state)
