"""The lab's no-silent-loss check (issue 9 item 2), used by tests/integration/conftest.py.

A message that got 250 must be delivered, or its sender told. These helpers read
the lab host's queue (``postqueue -j``) and mail log (journald, from a cursor) and
say what a test left behind that nobody will be told about.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

_QID = r"[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}"


def lab_exec(container: str, *argv: str) -> str:
    result = subprocess.run(["podman", "exec", container, *argv], capture_output=True, text=True, check=False,
                            timeout=60)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed in {container}: {result.stderr[-500:]}", pytrace=False)
    return result.stdout


def mail_queue(container: str) -> list[dict[str, object]]:
    """Every queue file, as ``postqueue -j`` describes it (one JSON object a line)."""
    return [json.loads(line) for line in lab_exec(container, "postqueue", "-j").splitlines() if line.strip()]


def journal_cursor(container: str) -> str:
    out = lab_exec(container, "journalctl", "--no-pager", "-n", "0", "--show-cursor")
    for line in out.splitlines():
        if line.startswith("-- cursor: "):
            return line.removeprefix("-- cursor: ").strip()
    pytest.fail(f"journalctl gave no cursor in {container}: {out[-300:]}", pytrace=False)


def mail_log_after(container: str, cursor: str) -> str:
    return lab_exec(container, "journalctl", "--no-pager", "-o", "short", "--after-cursor", cursor,
                     "-u", "postfix@-", "-u", "postfix")


def silent_losses(queue: list[dict[str, object]], before: set[str], log: str,
                  queued_reason: str | None, bounce_expected: bool) -> list[str]:
    """What the test left behind that nobody will ever be told about (empty: nothing)."""
    problems: list[str] = []
    for entry in queue:
        qid, name = str(entry["queue_id"]), str(entry["queue_name"])
        if qid in before or name not in ("deferred", "hold"):
            continue
        if name == "deferred":
            recipients = entry.get("recipients") or []
            reasons = [str(r.get("delay_reason", "")) for r in recipients if isinstance(r, dict)]
        else:
            reasons = re.findall(rf"\b{qid}: (?:milter-)?hold: (.*)", log)
        reasons = [r for r in reasons if r.strip()]
        if not reasons:
            problems.append(f"{qid} in the {name} queue with no reason (sender <{entry.get('sender')}>)")
        elif queued_reason is None:
            problems.append(f"{qid} left in the {name} queue: {reasons}")
        elif not all(re.search(queued_reason, r) for r in reasons):
            problems.append(f"{qid} in the {name} queue for an unexpected reason: {reasons}")
    null_sender = set(re.findall(rf"\b({_QID}): from=<>", log))
    for qid, rcpt, why in re.findall(rf"\b({_QID}): to=<([^>]*)>.*status=bounced \((.*)\)", log):
        if qid in null_sender and not bounce_expected:
            problems.append(f"undeliverable bounce {qid} to <{rcpt}> lost: {why}")
    return problems
