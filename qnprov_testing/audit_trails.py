"""Synthetic audit trails for the compliance report's tests and benchmark.

Written with the milter's own writer (:class:`qnprov.policy.audit.AuditLog` and
:func:`build_decision_event`), so the hash chains are real. One chain per host is
written to one file, then cut into daily files (``audit-YYYY-MM-DD.jsonl``) at day
boundaries: the same shape as the milter's daily directory, whose chain runs on from
file to file.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qnprov.policy.audit import AuditLog, build_decision_event

#: (rule, clause, action, direction) the generator draws from; None: a plain accept.
RULES: tuple[tuple[str | None, str | None, str | None, str], ...] = (
    (None, None, None, "inbound"),
    ("sender-login-mismatch", "1.1", "tag", "outbound"),
    ("signed-document-invalid", "1.2", "tag", "inbound"),
    ("signed-document", "1.2", "log", "inbound"),
    ("classified-marking", "1.3(1)", "reject", "outbound"),
    ("classified-uninspectable", "1.3(1)", "quarantine", "inbound"),
    ("freemail-outbound", "1.3(2)", "log", "outbound"),
    ("freemail-autoforward", "1.3(2)", "reject", "outbound"),
    ("service-registration", "1.3(3)", "tag", "inbound"),
)


@dataclass(frozen=True)
class Agency:
    code: str
    domain: str
    accounts: int


DEFAULT_AGENCIES = (Agency("STTTT", "stttt.quangninh.test", 40), Agency("SYT", "syt.quangninh.test", 120),
                    Agency("UBND", "quangninh.test", 300))


def address(agency: Agency, number: int) -> str:
    return f"user{number}@{agency.domain}"


def decision_event(rule: tuple[str | None, str | None, str | None, str], agency: Agency, user: str, other: str,
                   when: dt.datetime) -> dict[str, Any]:
    name, clause, action, direction = rule
    findings = [] if name is None else [{"rule": name, "clause": clause, "action": action,
                                         "location": "body", "evidence": "synthetic"}]
    verdict = action if action in ("reject", "quarantine") else "accept"
    sender, recipient = (user, other) if direction == "outbound" else (other, user)
    return build_decision_event(
        decision={"verdict": verdict, "findings": findings, "direction": direction, "policy_version": "synthetic"},
        queue_id=None, message_id=f"<{when.timestamp()}@synthetic>", sender=sender, recipients=[recipient],
        agencies=[agency.code], direction=direction, now=when)


def generate(hosts: Sequence[str], count: int, since: dt.date, days: int, *, seed: int = 7,
             agencies: Sequence[Agency] = DEFAULT_AGENCIES) -> dict[str, list[dict[str, Any]]]:
    """``count`` events per host spread in time over ``days`` days from ``since`` (sorted by time)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    trails: dict[str, list[dict[str, Any]]] = {}
    for host in hosts:
        offsets = sorted(rng.randrange(days * 86400) for _ in range(count))
        events = []
        for offset in offsets:
            agency = rng.choice(agencies)
            rule = rng.choice(RULES)
            # Registrations hit a few accounts per agency, so some repeat.
            number = rng.randrange(3) if rule[0] == "service-registration" else rng.randrange(agency.accounts)
            other = "shop@example.org" if rule[0] != "freemail-outbound" else "someone@gmail.com"
            events.append(decision_event(rule, agency, address(agency, number), other,
                                         start + dt.timedelta(seconds=offset)))
        trails[host] = events
    return trails


def _is_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def write_chain(directory: Path, events: Sequence[dict[str, Any]]) -> list[Path]:
    """One real chain over ``events``, cut into daily files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    whole = directory / "chain.tmp"
    with AuditLog(whole, fsync="never") as log:
        for event in events:
            log.append(event)
    files: dict[str, list[bytes]] = {}
    day = "0000-00-00"
    with whole.open("rb") as handle:
        for line in handle:
            when = json.loads(line).get("time")
            # A record without a proper time (the tests' malformed ones) stays in the current day's file.
            if isinstance(when, str) and _is_day(when[:10]):
                day = when[:10]
            files.setdefault(day, []).append(line)
    whole.unlink()
    written = []
    for day, lines in files.items():
        path = directory / f"audit-{day}.jsonl"
        path.write_bytes(b"".join(lines))
        written.append(path)
    return sorted(written)


def write_trails(root: Path, trails: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    """Each host's chain in ``root/<host>/``; returns host -> directory."""
    return {host: (write_chain(root / host, events), root / host)[1] for host, events in trails.items()}
