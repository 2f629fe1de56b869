"""Typed models of agencies, accounts, the directory's current state and a plan."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ldap3.utils.dn import escape_rdn as ldap3_escape_rdn

AccountStatus = Literal["active", "left"]
UpdateKind = Literal["modify", "move", "disable", "enable"]

# One gibibyte: a sensible mailbox for a civil servant; agencies may set their own.
DEFAULT_QUOTA_BYTES = 1024**3
DEFAULT_SERVICES = ("smtp", "imap", "sieve")
ACCOUNT_OBJECT_CLASSES = ("top", "inetOrgPerson", "inetLocalMailRecipient", "qnMailAccount")


@dataclass(frozen=True)
class RowError:
    """A bad input row: reported with its line number, never written."""

    line: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    parent: str | None = None
    domain: str | None = None
    default_quota: int | None = None


@dataclass(frozen=True)
class Account:
    """A person as HR says they should be (one valid roster row)."""

    employee_id: str
    agency: str
    full_name: str
    title: str = ""
    status: AccountStatus = "active"
    # None: the input has no forward column, so forwards are left as they are.
    forwards: tuple[str, ...] | None = None
    line: int = 0


@dataclass(frozen=True)
class DirectoryAccount:
    """A mail account as the directory holds it."""

    dn: str
    employee_id: str
    agency: str  # from the DN: the OU the entry lives in
    cn: str
    sn: str
    given_name: str
    title: str
    mail: str
    aliases: tuple[str, ...] = ()
    status: str = "active"
    disabled_at: str | None = None
    forwards: tuple[str, ...] = ()
    agency_code: str = ""  # the qnAgencyCode attribute; repaired if it disagrees with the DN
    employee_number: str = ""
    mail_host: str = ""  # qnMailHost: the mail store holding the mailbox (empty: no stores)


@dataclass(frozen=True)
class DirectoryGroup:
    dn: str
    agency: str
    mail: str | None
    members: frozenset[str]


@dataclass
class DirectoryState:
    """Everything the planner needs, read once from the directory."""

    base_dn: str
    agencies: dict[str, Agency] = field(default_factory=dict)
    accounts: dict[str, DirectoryAccount] = field(default_factory=dict)
    groups: dict[str, DirectoryGroup] = field(default_factory=dict)  # key: agency code (the -all list)
    taken_addresses: set[str] = field(default_factory=set)
    present_dns: set[str] = field(default_factory=set)  # lower-cased DNs of containers and groups
    problems: list[str] = field(default_factory=list)  # e.g. one uid in two OUs


@dataclass(frozen=True)
class AttributeChange:
    attribute: str
    old: tuple[str, ...]
    new: tuple[str, ...]


Entry = tuple[str, dict[str, tuple[str, ...]]]


@dataclass(frozen=True)
class AgencyCreate:
    """An agency's entries still missing (all five for a new agency)."""

    agency: Agency
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class AgencyUpdate:
    """An existing agency whose name or parent changed in agencies.csv."""

    code: str
    dn: str
    changes: tuple[AttributeChange, ...]


@dataclass(frozen=True)
class AccountCreate:
    employee_id: str
    agency: str
    dn: str
    mail: str
    attributes: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class AccountUpdate:
    kind: UpdateKind
    employee_id: str
    dn: str
    changes: tuple[AttributeChange, ...]
    new_dn: str | None = None  # set for moves


@dataclass(frozen=True)
class GroupUpdate:
    dn: str
    agency: str
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass
class Plan:
    agency_creates: list[AgencyCreate] = field(default_factory=list)
    agency_updates: list[AgencyUpdate] = field(default_factory=list)
    creates: list[AccountCreate] = field(default_factory=list)
    updates: list[AccountUpdate] = field(default_factory=list)
    group_updates: list[GroupUpdate] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    existing_accounts: int = 0

    def count(self, kind: str) -> int:
        if kind == "create":
            return len(self.creates)
        return sum(1 for update in self.updates if update.kind == kind)

    @property
    def is_empty(self) -> bool:
        return not (self.agency_creates or self.agency_updates or self.creates or self.updates
                    or self.group_updates)

    @property
    def mass_change_ratio(self) -> float:
        """Share of existing accounts this plan would disable or move."""
        if not self.existing_accounts:
            return 0.0
        return (self.count("disable") + self.count("move")) / self.existing_accounts

    @property
    def write_count(self) -> int:
        moves_with_changes = sum(1 for u in self.updates if u.kind == "move" and u.changes)
        return (sum(len(a.entries) for a in self.agency_creates) + len(self.agency_updates)
                + len(self.creates) + len(self.updates) + moves_with_changes + len(self.group_updates))

    def summary(self, *, applied: bool) -> dict[str, object]:
        return {
            "create": self.count("create"),
            "modify": self.count("modify"),
            "move": self.count("move"),
            "disable": self.count("disable"),
            "enable": self.count("enable"),
            "errors": [error.as_dict() for error in self.errors],
            "applied": applied,
        }


# --- DIT names (docs/design.md) ------------------------------------------------


_PLAIN_RDN_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def escape_rdn(value: str) -> str:
    """RFC 4514 escaping (ldap3's), skipped for the plain codes and ids validation allows."""
    return value if _PLAIN_RDN_VALUE.match(value) else ldap3_escape_rdn(value)


def agencies_dn(base_dn: str) -> str:
    return f"ou=agencies,{base_dn}"


def agency_dn(base_dn: str, code: str) -> str:
    return f"ou={escape_rdn(code)},{agencies_dn(base_dn)}"


def people_dn(base_dn: str, code: str) -> str:
    return f"ou=people,{agency_dn(base_dn, code)}"


def groups_dn(base_dn: str, code: str) -> str:
    return f"ou=groups,{agency_dn(base_dn, code)}"


def account_rdn(employee_id: str) -> str:
    return f"uid={escape_rdn(employee_id)}"


def account_dn(base_dn: str, code: str, employee_id: str) -> str:
    return f"{account_rdn(employee_id)},{people_dn(base_dn, code)}"


def all_group_dn(base_dn: str, code: str) -> str:
    return f"cn={escape_rdn(code.lower() + '-all')},{groups_dn(base_dn, code)}"


def admins_group_dn(base_dn: str, code: str) -> str:
    return f"cn={escape_rdn(code.lower() + '-admins')},{groups_dn(base_dn, code)}"


def domain_dn(base_dn: str, domain: str) -> str:
    return f"associatedDomain={escape_rdn(domain)},ou=domains,{base_dn}"


def agency_mail_domain(agency: Agency | None, default_domain: str) -> str:
    return (agency.domain if agency and agency.domain else default_domain).lower()


def agency_list_address(agency: Agency, default_domain: str) -> str:
    return f"{agency.code.lower()}@{agency_mail_domain(agency, default_domain)}"


def agency_entries(agency: Agency, base_dn: str, default_domain: str,
                   default_quota: int = DEFAULT_QUOTA_BYTES) -> list[Entry]:
    """The five entries that make an agency: its OU, people and groups OUs, two groups."""
    code = agency.code
    ou_attrs: dict[str, tuple[str, ...]] = {
        "objectClass": ("top", "organizationalUnit", "qnAgency"),
        "ou": (code,),
        "qnAgencyCode": (code,),
        "description": (agency.name,),
        "qnDefaultQuota": (str(agency.default_quota or default_quota),),
    }
    if agency.parent:
        ou_attrs["qnParentAgency"] = (agency.parent,)
    if agency.domain:
        ou_attrs["qnMailDomain"] = (agency.domain.lower(),)
    group_classes = ("top", "qnMailGroup")
    return [
        (agency_dn(base_dn, code), ou_attrs),
        (people_dn(base_dn, code), {"objectClass": ("top", "organizationalUnit"), "ou": ("people",)}),
        (groups_dn(base_dn, code), {"objectClass": ("top", "organizationalUnit"), "ou": ("groups",)}),
        (all_group_dn(base_dn, code), {
            "objectClass": group_classes, "cn": (f"{code.lower()}-all",), "qnAgencyCode": (code,),
            "mail": (agency_list_address(agency, default_domain),),
            "description": (f"Everyone at {agency.name}",)}),
        (admins_group_dn(base_dn, code), {
            "objectClass": group_classes, "cn": (f"{code.lower()}-admins",), "qnAgencyCode": (code,),
            "description": (f"Mail administrators of {agency.name}",)}),
    ]
