"""The figures of a compliance report, counted from audit records in one pass (pure).

Counting rules (docs/reporting.md says the same for readers):

- A record counts in the period when ``since <= time < until`` (UTC dates).
- An *event of clause C* is a record with at least one finding of clause C; its action
  is the strongest action among that clause's findings (reject > hold > tag > log;
  the bundle's ``quarantine`` is shown as *hold*). A record with findings of two clauses
  is one event of each. Records without findings (plain accepts) are not events.
- An event belongs to every agency the record names (``agencies``; a record naming none
  belongs to ``(none)``); ``--agency`` keeps the events of that agency only.
- Weeks start on Monday; every week that overlaps the period has a bar, empty or not.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qnprov.reporting.directoryview import DirectoryView

CLAUSES = ("1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)")
ACTIONS = ("reject", "hold", "tag", "log")
_ACTION_OF = {"reject": "reject", "quarantine": "hold", "tag": "tag", "log": "log"}
_STRENGTH = {name: rank for rank, name in enumerate(ACTIONS)}
NO_AGENCY = "(none)"
_FINDING_KEYS = ("rule", "clause", "action")
REGISTRATION_CLAUSE = "1.3(3)"
FREEMAIL_OUTBOUND_RULE = "freemail-outbound"
FREEMAIL_FORWARD_RULE = "freemail-autoforward"
#: The outbound abuse limits' rules (rspamd's ratelimit, qnprov.policy.ratelimit_audit): refusals and burst alerts.
RATE_RULE_PREFIX = "rate-"
RATE_BURST_RULE = "rate-burst"
#: Burst alerts listed one by one in a report (the rest are counted).
BURST_LIST_LIMIT = 500
#: An account registered with online services this many times is named in the report.
REPEATED_REGISTRATIONS = 2


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def period_weeks(since: dt.date, until: dt.date) -> list[str]:
    """The Monday of every week overlapping ``[since, until)``."""
    weeks = []
    monday = week_start(since)
    while monday < until:
        weeks.append(monday.isoformat())
        monday += dt.timedelta(days=7)
    return weeks


@dataclass
class Tally:
    """Mutable counters fed record by record (:meth:`add`), then frozen by :meth:`document`."""

    since: dt.date
    until: dt.date
    agency: str | None = None
    address_agency: Mapping[str, str] = field(default_factory=dict)
    disabled_addresses: Mapping[str, str] = field(default_factory=dict)
    records_in_period: int = 0
    events: int = 0
    malformed: int = 0
    weekly: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    agency_events: Counter[str] = field(default_factory=Counter)
    agency_clause: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    registrations: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    freemail_outbound: Counter[str] = field(default_factory=Counter)
    blocked_forwarding: Counter[str] = field(default_factory=Counter)
    disabled_receiving: Counter[str] = field(default_factory=Counter)
    rate_refusals: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    burst_alerts: list[dict[str, Any]] = field(default_factory=list)
    burst_count: Counter[str] = field(default_factory=Counter)
    disabled_accounts_receiving: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _weeks: dict[str, str] = field(default_factory=dict)
    _bounds: tuple[str, str] = ("", "")

    def __post_init__(self) -> None:
        self._bounds = (self.since.isoformat(), self.until.isoformat())

    def _week(self, when: str) -> str:
        day = when[:10]
        week = self._weeks.get(day)
        if week is None:
            week = self._weeks[day] = week_start(dt.date.fromisoformat(day)).isoformat()
        return week

    def add(self, record: Mapping[str, Any]) -> None:
        # The hot path of a report: called once per record of a year of trails, so lean.
        when = record.get("time")
        if not isinstance(when, str) or not self._bounds[0] <= when < self._bounds[1]:
            if not isinstance(when, str):
                self.malformed += 1
            return
        if not self._well_formed(record, when):
            self.malformed += 1
            return
        agencies = record.get("agencies") or ([record["agency"]] if record.get("agency") else [])
        if self.agency is not None:
            if self.agency not in agencies:
                return
            agencies = [self.agency]
        self.records_in_period += 1
        if self.disabled_addresses and record.get("direction") in ("inbound", "internal"):
            self._disabled_recipients(record)
        findings = record.get("findings")
        if not findings:
            return
        self.events += 1
        agencies = agencies or [NO_AGENCY]
        strongest: dict[str, str] = {}
        for finding in findings:
            clause = str(finding.get("clause"))
            action = _ACTION_OF.get(finding.get("action"), "log")
            known = strongest.get(clause)
            if known is None or _STRENGTH[action] < _STRENGTH[known]:
                strongest[clause] = action
            rule = finding.get("rule")
            if rule == FREEMAIL_OUTBOUND_RULE:
                for code in agencies:
                    self.freemail_outbound[code] += 1
            elif rule == FREEMAIL_FORWARD_RULE and action == "reject":
                for code in agencies:
                    self.blocked_forwarding[code] += 1
            elif isinstance(rule, str) and rule.startswith(RATE_RULE_PREFIX):
                self._rate(record, rule, agencies, when, str(finding.get("evidence") or ""))
        week = self._weeks.get(when[:10]) or self._week(when)
        weekly, agency_clause, agency_events = self.weekly, self.agency_clause, self.agency_events
        for clause, action in strongest.items():
            weekly[(clause, week, action)] += 1
            for code in agencies:
                agency_clause[(code, clause)] += 1
        for code in agencies:
            agency_events[code] += 1
        if REGISTRATION_CLAUSE in strongest:
            self._registration(record, agencies, when)

    def _well_formed(self, record: Mapping[str, Any], when: str) -> bool:
        """A chain can be intact around a record of the wrong shape (written by hand, or by a
        future milter): such a record is counted as malformed, never half counted."""
        if when[:10] not in self._weeks:
            try:
                self._week(when)
            except ValueError:
                return False
        agencies, findings = record.get("agencies"), record.get("findings")
        return (
            (agencies is None or (isinstance(agencies, list) and all(isinstance(a, str) for a in agencies)))
            and (findings is None or (isinstance(findings, list) and all(
                isinstance(f, dict) and all(isinstance(f.get(k), str | None) for k in _FINDING_KEYS)
                for f in findings)))
            and isinstance(record.get("recipients") or [], list)
            and isinstance(record.get("agency") or "", str)
        )

    def _rate(self, record: Mapping[str, Any], rule: str, agencies: list[str], when: str, evidence: str) -> None:
        for code in agencies:
            if rule == RATE_BURST_RULE:
                self.burst_count[code] += 1
            else:
                self.rate_refusals[(code, rule)] += 1
        if rule == RATE_BURST_RULE and len(self.burst_alerts) < BURST_LIST_LIMIT:
            self.burst_alerts.append({"time": when, "agency": agencies[0] if len(agencies) == 1 else NO_AGENCY,
                                      "account": record.get("authenticated_user") or record.get("sender"),
                                      "evidence": evidence})

    def _registration(self, record: Mapping[str, Any], agencies: list[str], when: str) -> None:
        for address in record.get("recipients") or ():
            address = str(address).strip("<>").lower()
            code = self.address_agency.get(address) or (agencies[0] if len(agencies) == 1 else NO_AGENCY)
            if self.agency is not None and code != self.agency:
                continue
            entry = self.registrations.get((code, address))
            if entry is None:
                self.registrations[(code, address)] = [1, when, when]
            else:
                entry[0] += 1
                entry[1] = min(entry[1], when)
                entry[2] = max(entry[2], when)

    def _disabled_recipients(self, record: Mapping[str, Any]) -> None:
        hit = False
        for address in record.get("recipients") or ():
            code = self.disabled_addresses.get(str(address).strip("<>").lower())
            if code is not None and (self.agency is None or code == self.agency):
                self.disabled_accounts_receiving[code].add(str(address).lower())
                if not hit:
                    self.disabled_receiving[code] += 1
                    hit = True

    def document(self, directory: DirectoryView, hosts: list[dict[str, Any]]) -> dict[str, Any]:
        """The report's one document of figures; HTML, CSV and JSON all render this."""
        weeks = period_weeks(self.since, self.until)
        clauses = {
            clause: {week: {action: self.weekly.get((clause, week, action), 0) for action in ACTIONS}
                     for week in weeks}
            for clause in CLAUSES
        }
        return {
            "schema": 1,
            "period": {"since": self._bounds[0], "until": self._bounds[1]},
            "agency_filter": self.agency,
            "weeks": weeks,
            "actions": list(ACTIONS),
            "clauses": clauses,
            "totals": {"records_in_period": self.records_in_period, "events": self.events, "malformed": self.malformed,
                       "records_read": sum(int(h.get("records") or 0) for h in hosts)},
            "agencies": self._agency_rows(directory),
            "registrations": [
                {"agency": code, "address": address, "count": n, "first": first, "last": last}
                for (code, address), (n, first, last) in sorted(
                    self.registrations.items(), key=lambda item: (item[0][0], -item[1][0], item[0][1]))
                if n >= REPEATED_REGISTRATIONS
            ],
            "freemail": [
                {"agency": code, "outbound_to_freemail": self.freemail_outbound.get(code, 0),
                 "blocked_forwarding": self.blocked_forwarding.get(code, 0)}
                for code in sorted(set(self.freemail_outbound) | set(self.blocked_forwarding))
            ],
            "hygiene": self._hygiene(directory),
            "rate_limits": [
                {"agency": code,
                 "refusals": {rule: n for (c, rule), n in sorted(self.rate_refusals.items()) if c == code},
                 "refused": sum(n for (c, _), n in self.rate_refusals.items() if c == code),
                 "burst_alerts": self.burst_count.get(code, 0)}
                for code in sorted({c for c, _ in self.rate_refusals} | set(self.burst_count))
            ],
            "burst_alerts": sorted(self.burst_alerts, key=lambda a: (str(a["time"]), str(a["account"]))),
            "burst_alerts_total": sum(self.burst_count.values()),
            "directory": directory.to_json(),
            "hosts": hosts,
        }

    def _agency_rows(self, directory: DirectoryView) -> list[dict[str, Any]]:
        codes = set(self.agency_events)
        if self.agency is not None:
            codes = {self.agency}
        elif directory.available:
            codes |= set(directory.agencies)
        rows: list[dict[str, Any]] = []
        for code in codes:
            known = directory.agencies.get(code)
            accounts = known.total if known else None
            events = self.agency_events.get(code, 0)
            rows.append({
                "agency": code,
                "name": known.name if known else None,
                "accounts": accounts,
                "events": events,
                "by_clause": {clause: self.agency_clause.get((code, clause), 0) for clause in CLAUSES},
                "per_100_accounts": round(100.0 * events / accounts, 2) if accounts else None,
            })
        rows.sort(key=lambda r: (-float(r["per_100_accounts"] or -1.0), -int(r["events"]), str(r["agency"])))
        return rows

    def _hygiene(self, directory: DirectoryView) -> list[dict[str, Any]]:
        if not directory.available:
            return []
        codes = [self.agency] if self.agency is not None else sorted(directory.agencies)
        rows = []
        for code in codes:
            known = directory.agencies.get(code)
            rows.append({
                "agency": code,
                "accounts": known.total if known else 0,
                "active": known.active if known else 0,
                "disabled": known.disabled if known else 0,
                "disabled_still_receiving": len(self.disabled_accounts_receiving.get(code, ())),
                "messages_to_disabled": self.disabled_receiving.get(code, 0),
            })
        return rows
