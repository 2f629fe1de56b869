"""``plan(desired, current) -> Plan``: the pure heart of account provisioning.

No I/O and no clock: the caller passes the directory state it read, the validated
roster and the timestamp a disable records. The same inputs always give the same plan,
so an interrupted apply is completed by planning again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qnprov.directory.models import (
    ACCOUNT_OBJECT_CLASSES,
    DEFAULT_QUOTA_BYTES,
    DEFAULT_SERVICES,
    Account,
    AccountCreate,
    AccountUpdate,
    Agency,
    AgencyCreate,
    AgencyUpdate,
    AttributeChange,
    DirectoryAccount,
    DirectoryState,
    GroupUpdate,
    Plan,
    RowError,
    UpdateKind,
    account_dn,
    agency_dn,
    agency_entries,
    agency_list_address,
    agency_mail_domain,
    all_group_dn,
)
from qnprov.directory.names import (
    DEFAULT_ADDRESS_PATTERN,
    AddressBook,
    local_part_for,
    normalize_name,
    split_name,
)

if TYPE_CHECKING:
    from qnprov.stores.config import StoreConfig


@dataclass(frozen=True)
class PlanOptions:
    default_domain: str
    now: str  # generalized time recorded in qnDisabledAt, e.g. "20261129201500Z"
    partial: bool = False
    address_pattern: str = DEFAULT_ADDRESS_PATTERN
    alias_on_rename: bool = False
    # Mail stores (issue 10): None or no stores leaves qnMailHost alone.
    stores: StoreConfig | None = None
    default_quota: int = DEFAULT_QUOTA_BYTES


@dataclass
class Desired:
    agencies: list[Agency] = field(default_factory=list)
    accounts: list[Account] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _values(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    return tuple(value)


def _changed(attribute: str, old: str | Iterable[str] | None, new: str | Iterable[str] | None,
             *, ordered: bool = True) -> AttributeChange | None:
    old_values, new_values = _values(old), _values(new)
    same = old_values == new_values if ordered else set(old_values) == set(new_values)
    return None if same else AttributeChange(attribute, old_values, new_values)


def _identity_changes(person: Account, current: DirectoryAccount) -> list[AttributeChange]:
    name = normalize_name(person.full_name)
    title = person.title.strip()
    changes: list[AttributeChange] = []
    if name != current.cn:
        parts = split_name(name)
        changes += [c for c in (_changed("cn", current.cn, name), _changed("sn", current.sn, parts.surname),
                                _changed("givenName", current.given_name, parts.given_names)) if c]
    else:  # the common case on re-sync: compare without building anything
        parts = split_name(name)
        if parts.surname != current.sn or parts.given_names != current.given_name:
            changes += [c for c in (_changed("sn", current.sn, parts.surname),
                                    _changed("givenName", current.given_name, parts.given_names)) if c]
    if title != current.title:
        changes.append(AttributeChange("title", _values(current.title), _values(title)))
    if person.employee_id != current.employee_number:
        changes.append(AttributeChange("employeeNumber", _values(current.employee_number), (person.employee_id,)))
    if person.agency != current.agency_code:
        changes.append(AttributeChange("qnAgencyCode", _values(current.agency_code), (person.agency,)))
    if person.forwards is not None:
        change = _changed("qnMailForward", current.forwards, sorted(person.forwards), ordered=False)
        if change:
            changes.append(change)
    return changes


def _agency_homes(current: DirectoryState) -> dict[str, str]:
    """Where each agency's mail lives now: the store most of its accounts are on.

    After `qnprov store failover` that is the replica, so an account created during a
    failover goes where its colleagues' mail is served, not to the failed store.
    """
    counts: dict[str, Counter[str]] = {}
    for account in current.accounts.values():
        if account.mail_host:
            counts.setdefault(account.agency.lower(), Counter())[account.mail_host] += 1
    # Most accounts first; a tie goes to the alphabetically first store (deterministic).
    return {code: min(counter.items(), key=lambda item: (-item[1], item[0]))[0] for code, counter in counts.items()}


def _mail_host(agency: str, homes: dict[str, str], stores: StoreConfig | None) -> str | None:
    if stores is None or not stores.enabled:
        return None
    return homes.get(agency.lower()) or stores.store_for(agency)


def _new_account(person: Account, dn: str, mail: str, quota: int, mail_host: str | None = None) -> AccountCreate:
    name = normalize_name(person.full_name)
    parts = split_name(name)
    attributes: dict[str, tuple[str, ...]] = {
        "objectClass": ACCOUNT_OBJECT_CLASSES,
        "uid": (person.employee_id,),
        "employeeNumber": (person.employee_id,),
        "cn": (name,),
        "sn": (parts.surname,),
        "givenName": (parts.given_names,),
        "mail": (mail,),
        "qnAgencyCode": (person.agency,),
        "qnAccountStatus": ("active",),
        "qnEnabledService": DEFAULT_SERVICES,
        "qnMailQuota": (str(quota),),
    }
    if person.title.strip():
        attributes["title"] = (person.title.strip(),)
    if person.forwards:
        attributes["qnMailForward"] = tuple(sorted(person.forwards))
    if mail_host:
        attributes["qnMailHost"] = (mail_host,)
    return AccountCreate(person.employee_id, person.agency, dn, mail, attributes)


def plan(desired: Desired, current: DirectoryState, options: PlanOptions) -> Plan:
    """Everything that must change for the directory to match ``desired``."""
    base = current.base_dn
    result = Plan(errors=list(desired.errors), existing_accounts=len(current.accounts))
    agencies: dict[str, Agency] = dict(current.agencies)
    for agency in sorted(desired.agencies, key=lambda a: a.code):
        existing_agency = agencies.setdefault(agency.code, agency)
        if existing_agency is not agency:
            # Name and parent follow agencies.csv; the mail domain and quota are set by
            # `agency add` and not silently changed by a sync.
            changes = [c for c in (_changed("description", existing_agency.name, agency.name),
                                   _changed("qnParentAgency", existing_agency.parent, agency.parent)) if c]
            if changes:
                result.agency_updates.append(AgencyUpdate(agency.code, agency_dn(base, agency.code), tuple(changes)))
    book = AddressBook(current.taken_addresses)
    homes = _agency_homes(current) if options.stores is not None and options.stores.enabled else {}
    for code in sorted(agencies):
        agency = agencies[code]
        entries = agency_entries(agency, base, options.default_domain, options.default_quota)
        missing = tuple(entry for entry in entries if entry[0].lower() not in current.present_dns)
        if missing:  # a new agency, or one an interrupted run left half-made
            result.agency_creates.append(AgencyCreate(agency, missing))
            book.reserve(agency_list_address(agency, options.default_domain))

    # Where every account ends up and whether it is active: drives the -all lists.
    final_home: dict[str, tuple[str, str, bool]] = {
        eid: (acc.agency, acc.dn, acc.status == "active") for eid, acc in current.accounts.items()
    }
    roster_ids: set[str] = set()
    for person in sorted(desired.accounts, key=lambda p: p.employee_id):
        roster_ids.add(person.employee_id)
        existing = current.accounts.get(person.employee_id)
        target_dn = account_dn(base, person.agency, person.employee_id)
        if existing is None:
            if person.status == "left":
                continue  # never had an account: nothing to disable
            home = agencies.get(person.agency)
            local = local_part_for(person.full_name, options.address_pattern)
            mail = book.allocate(local, agency_mail_domain(home, options.default_domain))
            quota = (home.default_quota if home and home.default_quota else options.default_quota)
            result.creates.append(_new_account(person, target_dn, mail, quota,
                                               _mail_host(person.agency, homes, options.stores)))
            final_home[person.employee_id] = (person.agency, target_dn, True)
            continue

        changes = _identity_changes(person, existing)
        if not existing.mail_host:
            # Stores configured and this account on none: give it its agency's store. A
            # mailbox already on a store is never re-homed here (failover does that).
            host = _mail_host(person.agency, homes, options.stores)
            if host:
                changes.append(AttributeChange("qnMailHost", (), (host,)))
        if options.alias_on_rename and normalize_name(person.full_name) != existing.cn:
            local = local_part_for(person.full_name, options.address_pattern)
            domain = existing.mail.partition("@")[2]
            alias = f"{local}@{domain}"
            if alias.lower() != existing.mail.lower() and alias not in existing.aliases and not book.is_taken(alias):
                book.reserve(alias)
                changes.append(AttributeChange("mailLocalAddress", existing.aliases, (*existing.aliases, alias)))
        active = existing.status == "active"
        if person.status == "left" and active:
            kind: UpdateKind = "disable"
            changes += [AttributeChange("qnAccountStatus", ("active",), ("disabled",)),
                        AttributeChange("qnDisabledAt", _values(existing.disabled_at), (options.now,))]
            active = False
        elif person.status == "active" and not active:
            kind = "enable"
            changes += [AttributeChange("qnAccountStatus", (existing.status,), ("active",)),
                        AttributeChange("qnDisabledAt", _values(existing.disabled_at), ())]
            active = True
        else:
            kind = "modify"
        moved = existing.agency != person.agency
        if moved:
            kind = "move"
        if changes or moved:
            result.updates.append(AccountUpdate(kind, person.employee_id, existing.dn, tuple(changes),
                                                new_dn=target_dn if moved else None))
        final_home[person.employee_id] = (person.agency, target_dn if moved else existing.dn, active)

    if not options.partial:
        for eid in sorted(set(current.accounts) - roster_ids):
            existing = current.accounts[eid]
            if existing.status == "active":
                result.updates.append(AccountUpdate("disable", eid, existing.dn, (
                    AttributeChange("qnAccountStatus", ("active",), ("disabled",)),
                    AttributeChange("qnDisabledAt", _values(existing.disabled_at), (options.now,)),
                )))
                final_home[eid] = (existing.agency, existing.dn, False)

    result.group_updates = _group_updates(base, agencies, current, final_home.values())
    return result


def _group_updates(base: str, agencies: dict[str, Agency], current: DirectoryState,
                   homes: Iterable[tuple[str, str, bool]]) -> list[GroupUpdate]:
    """Keep each agency's ``<code>-all`` list equal to its active accounts."""
    # DNs compare case-insensitively; keep the spelling we write or the directory holds.
    wanted: dict[str, dict[str, str]] = {code: {} for code in agencies}
    for agency, dn, active in homes:
        if active:
            wanted.setdefault(agency, {})[dn.lower()] = dn
    updates = []
    for code in sorted(wanted):
        group = current.groups.get(code)
        have = {m.lower(): m for m in group.members} if group else {}
        add = tuple(wanted[code][k] for k in sorted(wanted[code].keys() - have.keys()))
        remove = tuple(have[k] for k in sorted(have.keys() - wanted[code].keys()))
        if add or remove:
            dn = group.dn if group else all_group_dn(base, code)
            updates.append(GroupUpdate(dn, code, add, remove))
    return updates


def mass_change_refusal(plan_: Plan, threshold: float) -> str | None:
    """Why a plan needs --allow-mass-change, or None."""
    ratio = plan_.mass_change_ratio
    if ratio > threshold:
        return (f"the plan disables or moves {plan_.count('disable') + plan_.count('move')} of "
                f"{plan_.existing_accounts} existing accounts ({ratio:.1%} > {threshold:.0%}); "
                "check the roster, then re-run with --allow-mass-change")
    return None
