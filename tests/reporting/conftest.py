"""Synthetic fleets of audit trails (real chains, written by the milter's writer) and the
figures a report must show for them, counted here independently of qnprov.reporting."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qnprov_testing import audit_trails

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


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    trails = audit_trails.generate(HOSTS, 1500, FIRST_DAY, 40)
    return Fleet(trails, audit_trails.write_trails(tmp_path_factory.mktemp("fleet"), trails))
