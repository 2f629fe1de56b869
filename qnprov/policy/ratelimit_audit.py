"""The outbound limits' events (issue 13) into the hash-chained audit trail.

The limits themselves are rspamd's (its ratelimit module, Redis buckets; the rspamd role).
rspamd's metadata exporter writes every refusal and every burst to the journal, identifier
``qnprov-ratelimit``: ``QNPROV-RATELIMIT {json}`` at priority warning, ``QNPROV-RATE-BURST
{json}`` at priority alert (a refused message of a burst gets both lines, hence two
records). This module turns those journal entries into audit records (clause 2: the
department runs the system safely) and appends them to the trail the policy milter
writes, so ``qnprov audit report`` and the compliance report count them. A cursor file
remembers the last entry imported; ``qnprov-ratelimit-audit.timer`` (qnprov_milter role)
runs the import every minute.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qnprov.errors import InputError
from qnprov.policy.audit import AuditLog, short_evidence

JOURNAL_TAG = "qnprov-ratelimit"
EVENT_ID = "QNPROV-RATELIMIT"
BURST_ID = "QNPROV-RATE-BURST"
RATE_CLAUSE = "2"
SOURCE = "rspamd-ratelimit"
BURST_RULE = "rate-burst"


def _rule(limit: str) -> str:
    """rspamd's bucket name (``qnprov_user_external``) as an audit rule (``rate-user-external``)."""
    return "rate-" + limit.removeprefix("qnprov_").replace("_", "-")


def audit_event(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The audit record for one journal entry of the exporter, or None for any other line."""
    message = entry.get("MESSAGE")
    if not isinstance(message, str):
        return None
    tag, _, payload = message.partition(" ")
    if tag not in (EVENT_ID, BURST_ID):
        return None
    try:
        doc = json.loads(payload)
        micros = int(entry["__REALTIME_TIMESTAMP"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(doc, dict):
        return None
    when = dt.datetime.fromtimestamp(micros / 1_000_000, dt.UTC).isoformat(timespec="milliseconds")
    limits = [str(name) for name in doc.get("limits") or []]
    user = str(doc.get("user") or "") or None
    agency = str(doc.get("agency") or "") or None
    counts = f"{doc.get('recipients', 0)} recipients ({doc.get('external_recipients', 0)} external)"
    if tag == BURST_ID:  # the alert; the same message's refusal, if any, is its own line
        findings = [{"rule": BURST_RULE, "clause": RATE_CLAUSE, "action": "alert",
                     "evidence": short_evidence(f"{user}: burst of external recipients; {counts}")}]
    else:
        findings = [{"rule": _rule(name), "clause": RATE_CLAUSE, "action": "defer",
                     "evidence": short_evidence(f"{user}: over {name}; {counts}")} for name in limits]
    if not findings:
        return None
    primary = findings[0]
    return {
        "time": when,
        "source": SOURCE,
        "queue_id": str(doc.get("queue_id") or "") or None,
        "message_id": str(doc.get("message_id") or "") or None,
        "sender": user or "",
        "recipients": [],
        "authenticated_user": user,
        "direction": "outbound",
        "agency": agency,
        "agencies": [agency] if agency else [],
        "verdict": "defer" if doc.get("refused") else "accept",
        "rule": primary["rule"],
        "clause": RATE_CLAUSE,
        "action": primary["action"],
        "evidence": primary["evidence"],
        "findings": findings,
        "policy_version": None,
    }


def import_entries(lines: Iterable[str], log: AuditLog, *, after: str | None = None) -> tuple[int, str | None]:
    """Append the records of ``journalctl -o json`` lines, leaving out the entry whose cursor
    is ``after`` (imported last time); (records written, last cursor)."""
    written, cursor = 0, after
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        if after is not None and entry.get("__CURSOR") == after:
            continue
        event = audit_event(entry)
        if event is not None:
            log.append(event)
            written += 1
        cursor = entry.get("__CURSOR", cursor)
    return written, cursor


def import_journal(audit_log: Path, cursor_file: Path) -> int:
    """Import what the journal got since the cursor; the cursor moves only after the records
    are written, so a crash imports an entry twice at worst, never loses one."""
    argv = ["journalctl", "--no-pager", "-o", "json", "-t", JOURNAL_TAG]
    after = cursor_file.read_text().strip() if cursor_file.exists() else None
    if after:
        # --cursor (inclusive) and skip that entry: systemd 252's --after-cursor together
        # with a match (-t) shows nothing when the cursor's entry does not match.
        argv += ["--cursor", after]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise InputError(f"journalctl failed: {result.stderr.strip()[-300:]}")
    with AuditLog(audit_log) as log:
        written, cursor = import_entries(result.stdout.splitlines(), log, after=after or None)
    if cursor and cursor != after:
        tmp = cursor_file.with_suffix(".tmp")
        tmp.write_text(cursor + "\n")
        os.replace(tmp, cursor_file)
    return written
