"""Quarantine = Postfix's hold queue. List, release and delete held messages.

The milter quarantines by asking Postfix to HOLD the message, so the held mail
never leaves the mail host. These commands therefore run *on* the mail host:
through ``podman exec`` for the lab container, ``ssh`` for a remote host, or
directly when qnprov runs on the mail host itself. The executor is the only
I/O; parsing and planning are pure.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qnprov.errors import ExternalError, InputError

#: Short (hex) and long (enable_long_queue_ids) Postfix queue ids. Never "ALL".
QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,32}$")


class Executor(Protocol):
    """Runs a command on the mail host."""

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class LocalExecutor:
    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExternalError(f"cannot run {argv[0]}: {exc}") from exc


@dataclass(frozen=True)
class PodmanExecutor:
    container: str

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return LocalExecutor().run(["podman", "exec", self.container, *argv])


@dataclass(frozen=True)
class SshExecutor:
    host: str

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return LocalExecutor().run(["ssh", "-o", "BatchMode=yes", self.host, "--", shlex.join(argv)])


def executor_for(container: str | None, ssh_host: str | None) -> Executor:
    if container and ssh_host:
        raise InputError("give either --container or --host, not both")
    if container:
        return PodmanExecutor(container)
    if ssh_host:
        return SshExecutor(ssh_host)
    return LocalExecutor()


@dataclass(frozen=True)
class HeldMessage:
    queue_id: str
    arrival_time: dt.datetime
    size: int
    sender: str
    recipients: tuple[str, ...]
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "arrival_time": self.arrival_time.isoformat(),
            "size": self.size,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "reason": self.reason,
        }


def parse_postqueue_json(text: str) -> list[HeldMessage]:
    """Held messages from ``postqueue -j`` output (one JSON object per line)."""
    held: list[HeldMessage] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ExternalError(f"postqueue -j line {number} is not JSON: {line[:80]!r}") from exc
        if entry.get("queue_name") != "hold":
            continue
        held.append(
            HeldMessage(
                queue_id=str(entry["queue_id"]),
                arrival_time=dt.datetime.fromtimestamp(int(entry.get("arrival_time", 0)), dt.UTC),
                size=int(entry.get("message_size", 0)),
                sender=str(entry.get("sender", "")),
                recipients=tuple(str(r.get("address", "")) for r in entry.get("recipients", [])),
            )
        )
    return held


def validate_queue_ids(queue_ids: Sequence[str]) -> list[str]:
    bad = [q for q in queue_ids if not QUEUE_ID.match(q)]
    if bad:
        raise InputError(
            f"not a Postfix queue id: {', '.join(bad)} (expected 6-32 letters/digits)",
            [{"queue_id": q, "reason": "invalid"} for q in bad],
        )
    if not queue_ids:
        raise InputError("give at least one queue id")
    return list(dict.fromkeys(queue_ids))


class Quarantine:
    """The hold queue of one Postfix instance on one host."""

    def __init__(self, executor: Executor, *, config_dir: str | None = None) -> None:
        self._executor = executor
        self._config = ["-c", config_dir] if config_dir else []

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        result = self._executor.run(argv)
        if result.returncode != 0:
            raise ExternalError(f"{' '.join(argv[:1])} failed ({result.returncode}): {result.stderr.strip()[:300]}")
        return result

    def held(self, *, reasons: dict[str, str] | None = None) -> list[HeldMessage]:
        result = self._run(["postqueue", *self._config, "-j"])
        held = parse_postqueue_json(result.stdout)
        if reasons:
            held = [HeldMessage(**{**m.__dict__, "reason": reasons.get(m.queue_id)}) for m in held]
        return held

    def _held_ids(self, queue_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        wanted = validate_queue_ids(queue_ids)
        held = {m.queue_id for m in self.held()}
        return [q for q in wanted if q in held], [q for q in wanted if q not in held]

    def release(self, queue_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Move held messages back to the active queue. Returns (done, not held)."""
        present, missing = self._held_ids(queue_ids)
        for queue_id in present:
            self._run(["postsuper", *self._config, "-H", queue_id])
        return present, missing

    def delete(self, queue_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete held messages (only from the hold queue). Returns (done, not held)."""
        present, missing = self._held_ids(queue_ids)
        for queue_id in present:
            self._run(["postsuper", *self._config, "-d", queue_id, "hold"])
        return present, missing


def hold_reasons_from_audit(path: Path) -> dict[str, str]:
    """queue id -> why the milter held it, read from the audit trail."""
    from qnprov.policy.audit import iter_audit_records

    reasons: dict[str, str] = {}
    for record in iter_audit_records(path):
        if record.get("verdict") == "quarantine" and record.get("queue_id"):
            reasons[str(record["queue_id"])] = f"{record.get('clause')} {record.get('rule')}: {record.get('evidence')}"
    return reasons


def operator_name() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def quarantine_event(action: str, queue_id: str) -> dict[str, Any]:
    """Audit record of an operator's release/delete, chained like any decision."""
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "source": "quarantine-cli",
        "queue_id": queue_id,
        "operator": operator_name(),
        "verdict": action,
        "action": action,
        "findings": [],
    }
