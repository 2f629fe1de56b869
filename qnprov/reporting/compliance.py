"""One compliance report: the period, the trails, the directory's view -> one document."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from qnprov.errors import InputError
from qnprov.reporting.collect import HostTrail, check_trail
from qnprov.reporting.directoryview import DirectoryView, unavailable
from qnprov.reporting.figures import Tally


def parse_period(since: str | None, until: str | None, month: str | None,
                 today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """``--since``/``--until`` (dates, until exclusive) or ``--month YYYY-MM|previous``."""
    if month is not None:
        if since or until:
            raise InputError("give either --month or --since/--until, not both")
        if month == "previous":
            first = (today or dt.datetime.now(dt.UTC).date()).replace(day=1)
            start = (first - dt.timedelta(days=1)).replace(day=1)
        else:
            try:
                start = dt.date.fromisoformat(month + "-01")
            except ValueError:
                raise InputError(f"--month {month!r}: use YYYY-MM or previous") from None
        end = (start + dt.timedelta(days=32)).replace(day=1)
        return start, end
    if not since or not until:
        raise InputError("give --since and --until (YYYY-MM-DD, until exclusive) or --month")
    try:
        start, end = dt.date.fromisoformat(since), dt.date.fromisoformat(until)
    except ValueError as exc:
        raise InputError(f"--since/--until: {exc}") from None
    if start >= end:
        raise InputError(f"--since {start} must be before --until {end}")
    return start, end


def build_document(trails: Sequence[HostTrail], since: dt.date, until: dt.date, *, agency: str | None = None,
                   directory: DirectoryView | None = None) -> dict[str, Any]:
    """Verify and count every host's trail in one pass each, then the figures."""
    directory = directory or unavailable("not asked for (no inventory)")
    tally = Tally(since, until, agency, directory.address_agency, directory.disabled_addresses)
    hosts = [check_trail(trail, tally.add) for trail in trails]
    return tally.document(directory, hosts)


def all_chains_intact(document: dict[str, Any]) -> bool:
    return all(host["ok"] for host in document["hosts"])
