"""Move a store's accounts to its replica (failover) and back (failback) by rewriting qnMailHost.

Postfix's transport map and Dovecot's login proxy look qnMailHost up per delivery and per
login, so the rewrite is the whole switch: no service is reloaded. Both directions are
planned first (which accounts, from where to where), checked against the target store's
replicator, and only then written; a second run finds nothing left to move.

- failover STORE [--to T]: every account whose qnMailHost is STORE moves to T (default:
  STORE's replica). T must be up and hold a synced copy of every one of them.
- failback STORE: every account whose agency belongs on STORE (qnprov_agency_stores, else
  the first store) and which now lives on another store moves back to STORE. STORE must be
  up and have synced every one of them successfully, recently (``max_sync_age``), with no
  failed attempt since: i.e. it has resynced after coming back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ldap3 import MODIFY_REPLACE, Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from qnprov.errors import ExternalError, InputError
from qnprov.stores.config import StoreConfig
from qnprov.stores.probe import StoreDown, StoreProbe, SyncState

Direction = Literal["failover", "failback"]
DEFAULT_MAX_SYNC_AGE = 600  # seconds: failback wants a sync this recent for every account
_AGENCY_IN_DN = "ou=people,ou="


class Refused(InputError):
    """The move must not happen; nothing was written."""


@dataclass(frozen=True)
class Move:
    dn: str
    mail: str
    source: str
    target: str


@dataclass
class MovePlan:
    direction: Direction
    store: str
    target: str
    moves: list[Move] = field(default_factory=list)
    already: int = 0  # accounts already where this command puts them

    def summary(self, *, applied: bool, written: int = 0) -> dict[str, object]:
        return {"command": self.direction, "store": self.store, "target": self.target,
                "to_move": len(self.moves), "moved": written, "already_there": self.already,
                "applied": applied,
                "accounts": [{"mail": m.mail, "dn": m.dn, "from": m.source, "to": m.target} for m in self.moves]}


def _agency_of(dn: str) -> str:
    """The agency code of an account DN (uid=..,ou=people,ou=CODE,ou=agencies,...)."""
    lower = dn.lower()
    at = lower.find("," + _AGENCY_IN_DN)
    if at < 0:
        return ""
    rest = dn[at + 1 + len(_AGENCY_IN_DN):]
    return rest.split(",", 1)[0]


def _first(value: object) -> str:
    """One value of an attribute, whether ldap3 gave a list (no schema read) or a string."""
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def accounts_on(connection: Connection, base_dn: str, hosts: list[str]) -> list[tuple[str, str, str]]:
    """(dn, mail, qnMailHost) of every account on one of ``hosts`` (filter values escaped)."""
    terms = "".join(f"(qnMailHost={escape_filter_chars(host)})" for host in hosts)
    search_filter = f"(&(objectClass=qnMailAccount)(|{terms}))"
    try:
        entries = connection.extend.standard.paged_search(
            f"ou=agencies,{base_dn}", search_filter, attributes=["mail", "qnMailHost"], paged_size=1000,
            generator=False)
    except LDAPException as exc:
        raise ExternalError(f"reading the accounts on {', '.join(hosts)}: {exc}") from exc
    found = []
    for entry in entries:
        if entry.get("type") != "searchResEntry":
            continue
        attrs = entry["attributes"]
        found.append((entry["dn"], _first(attrs.get("mail")), _first(attrs.get("qnMailHost")).lower()))
    return sorted(found)


def plan_failover(connection: Connection, base_dn: str, config: StoreConfig, store: str,
                  to: str | None = None) -> MovePlan:
    source = config.get(store)
    target = config.get(to) if to else config.get(source.replica)
    if target.name == source.name:
        raise Refused(f"failover target {target.name} is the store being failed over")
    plan = MovePlan("failover", source.name, target.name)
    for dn, mail, host in accounts_on(connection, base_dn, [source.name, target.name]):
        if host == source.name:
            plan.moves.append(Move(dn, mail, source.name, target.name))
        else:
            plan.already += 1
    return plan


def plan_failback(connection: Connection, base_dn: str, config: StoreConfig, store: str) -> MovePlan:
    home = config.get(store)
    plan = MovePlan("failback", home.name, home.name)
    others = [s.name for s in config.stores if s.name != home.name]
    for dn, mail, host in accounts_on(connection, base_dn, [home.name, *others]):
        if config.store_for(_agency_of(dn)) != home.name:
            continue  # an account that belongs on another store stays where it is
        if host == home.name:
            plan.already += 1
        else:
            plan.moves.append(Move(dn, mail, host, home.name))
    return plan


def _synced(state: SyncState | None, direction: Direction, max_sync_age: int) -> bool:
    """Failover: the target has a copy (any successful sync). Failback: it has resynced."""
    if state is None or state.last_success_seconds is None:
        return False
    if direction == "failback":
        return not state.last_failed and state.last_success_seconds <= max_sync_age
    return True


def check_target(plan: MovePlan, probe: StoreProbe, *, max_sync_age: int = DEFAULT_MAX_SYNC_AGE) -> None:
    """Refuse (raise :class:`Refused`) unless the target is up and holds synced copies."""
    if not plan.moves:
        return
    try:
        states = probe.replicator_status(plan.target)
    except StoreDown as exc:
        raise Refused(f"refused: {plan.direction} to {plan.target}: the store is down or its replicator does not "
                      f"answer ({exc}); nothing was changed") from exc
    missing: list[str] = []
    for move in plan.moves:
        if not _synced(states.get(move.mail.lower()), plan.direction, max_sync_age):
            missing.append(move.mail)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        if plan.direction == "failover":
            why = "has never synced"
            hint = "check replication (doveadm replicator status '*' on it)"
        else:
            why = f"has not resynced (no successful sync in the last {max_sync_age} s, or the last one failed)"
            hint = "force it with doveadm replicator replicate -f '*' on it, then retry"
        raise Refused(f"refused: {plan.direction} to {plan.target}: the store {why} {len(missing)} of the "
                      f"{len(plan.moves)} accounts to move ({shown}); {hint}. Nothing was changed",
                      [{"mail": mail, "reason": why} for mail in missing])


def apply_moves(connection: Connection, plan: MovePlan) -> int:
    """Rewrite qnMailHost of every planned account; returns how many were written."""
    written = 0
    for move in plan.moves:
        try:
            connection.modify(move.dn, {"qnMailHost": [(MODIFY_REPLACE, [move.target])]})
        except LDAPException as exc:
            raise ExternalError(f"{plan.direction} stopped after {written} of {len(plan.moves)} accounts "
                                f"({move.mail}: {exc}); run it again to finish") from exc
        written += 1
    return written
