"""Synthetic fleets of audit trails (real chains, written by the milter's writer), the
figures a report must show for them (counted here independently of qnprov.reporting),
and a directory view to report them against."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qnprov.directory.models import Agency, DirectoryAccount, DirectoryState
from qnprov.reporting.directoryview import DirectoryView, view_from_state

HOSTS = ("mail1", "mail2", "mail3")
SINCE = dt.date(2026, 11, 1)
UNTIL = dt.date(2026, 12, 1)
#: Events are spread over 40 days from 10/27, so some fall outside the period on both sides.
FIRST_DAY = dt.date(2026, 10, 27)
HOLD = {"quarantine": "hold"}


@dataclass
class Fleet:
    trails: dict[str, list[dict[str, Any]]]
    dirs: dict[str, Path]

    def in_period(self, agency: str | None = None) -> list[dict[str, Any]]:
        return [e for events in self.trails.values() for e in events
                if SINCE.isoformat() <= e["time"] < UNTIL.isoformat() and (agency is None or e["agency"] == agency)]

    def expected(self, agency: str | None = None) -> dict[str, Any]:
        weekly: Counter[tuple[str, str, str]] = Counter()
        per_agency: Counter[str] = Counter()
        registrations: Counter[tuple[str, str]] = Counter()
        freemail: dict[str, Counter[str]] = defaultdict(Counter)
        for event in self.in_period(agency):
            if not event["findings"]:
                continue
            day = dt.date.fromisoformat(event["time"][:10])
            week = (day - dt.timedelta(days=day.weekday())).isoformat()
            weekly[(event["clause"], week, HOLD.get(event["action"], event["action"]))] += 1
            per_agency[event["agency"]] += 1
            if event["rule"] == "service-registration":
                registrations[(event["agency"], event["recipients"][0])] += 1
            if event["rule"] == "freemail-outbound":
                freemail[event["agency"]]["outbound"] += 1
            if event["rule"] == "freemail-autoforward":
                freemail[event["agency"]]["blocked"] += 1
        return {"weekly": weekly, "per_agency": per_agency,
                "registrations": {k: n for k, n in registrations.items() if n >= 2}, "freemail": freemail}


def directory_view() -> DirectoryView:
    """Four agencies (SNV has no events); accounts 0 and 5 of each are disabled."""
    state = DirectoryState(base_dn="dc=quangninh,dc=test")
    for code, size in (("STTTT", 40), ("SYT", 120), ("UBND", 300), ("SNV", 10)):
        state.agencies[code] = Agency(code, f"Agency {code}")
        for number in range(size):
            status = "disabled" if number in (0, 5) else "active"
            domain = {"STTTT": "stttt.quangninh.test", "SYT": "syt.quangninh.test"}.get(code, "quangninh.test")
            mail = f"user{number}@{domain}" if code != "SNV" else f"snv{number}@quangninh.test"
            dn = f"uid={code}{number},ou=people,ou={code},ou=agencies,dc=quangninh,dc=test"
            state.accounts[dn] = DirectoryAccount(dn, f"{code}{number}", code, "x", "x", "x", "", mail,
                                                  status=status, agency_code=code)
    return view_from_state(state)
