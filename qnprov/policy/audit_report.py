"""The audit trail summarised: what was blocked or flagged, per agency or per rule, and when.

``qnprov audit report`` prints these rows; the records come from
:func:`qnprov.policy.audit.iter_audit_records`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ReportRow:
    key: str
    rule: str
    clause: str
    action: str
    count: int
    first: str
    last: str


def summarise(
    records: Iterable[Mapping[str, Any]],
    *,
    by: Literal["agency", "rule"],
    since: str | None = None,
    until: str | None = None,
    include_accept: bool = False,
) -> list[ReportRow]:
    """Count what was blocked or flagged, per agency or per rule, and when.

    Every finding counts once per agency it concerns. Decisions without
    findings (plain accepts) are left out unless ``include_accept``.
    """
    counts: Counter[tuple[str, str, str, str]] = Counter()
    first: dict[tuple[str, str, str, str], str] = {}
    last: dict[tuple[str, str, str, str], str] = {}
    for record in records:
        when = str(record.get("time", ""))
        if (since and when < since) or (until and when >= until):
            continue
        findings = record.get("findings") or []
        if not findings:
            if not include_accept:
                continue
            findings = [{"rule": "-", "clause": "-", "action": record.get("verdict", "accept")}]
        agencies = record.get("agencies") or [record.get("agency") or "(unknown)"]
        for finding in findings:
            rule, clause = str(finding.get("rule")), str(finding.get("clause"))
            action = str(finding.get("action"))
            keys = [str(a) for a in agencies] if by == "agency" else [rule]
            for key in keys:
                bucket = (key, rule, clause, action)
                counts[bucket] += 1
                first.setdefault(bucket, when)
                first[bucket] = min(first[bucket], when)
                last[bucket] = max(last.get(bucket, when), when)
    return [
        ReportRow(key=b[0], rule=b[1], clause=b[2], action=b[3], count=n, first=first[b], last=last[b])
        for b, n in sorted(counts.items())
    ]
