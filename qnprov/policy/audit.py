"""Append-only, hash-chained audit trail of policy decisions (Article 2 monitoring).

Every decision the milter takes becomes one JSON line. Each line carries
``prev`` (the ``hash`` of the line before it; 64 zeros for the first line of a
chain) and its own ``hash``: the SHA-256 of the canonical JSON of the record
without the ``hash`` key. Editing, deleting or reordering any line therefore
breaks the chain at that line, and :func:`verify_audit_log` names the first bad
line. A chain cannot show that lines were cut from its *end*; for that the
operator keeps the current head hash elsewhere (the milter logs it to the
journal at start-up and every ``head_log_interval`` records) and passes it as
``expected_head``.

Durability: the file is opened with ``O_APPEND`` so every write lands at the end
even when several processes share the file, and a write happens under an
exclusive ``flock`` so the read-last-hash/append pair is atomic across
processes (a ``threading.Lock`` covers threads of one process, because flock
locks belong to the open file description, not to the thread). ``fsync``
policy: ``"always"`` (default) syncs after every record so that a record the
milter acted on survives a crash; ``"never"`` leaves flushing to the kernel and
is for benchmarks and tests only.

Which agencies a record names is :mod:`qnprov.policy.agencies`; the per-agency and
per-rule report over the records is :mod:`qnprov.policy.audit_report`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qnprov.errors import InputError

GENESIS_HASH = "0" * 64
EVIDENCE_LIMIT = 200
FsyncPolicy = Literal["always", "never"]


def canonical_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def short_evidence(text: str, limit: int = EVIDENCE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_decision_event(
    *,
    decision: Mapping[str, Any],
    queue_id: str | None,
    message_id: str | None,
    sender: str,
    recipients: Sequence[str],
    agencies: Sequence[str],
    authenticated_user: str | None = None,
    direction: str | None = None,
    source: str = "milter",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The audit record for one decision (``decision`` is ``Decision.to_json()``).

    The top-level ``rule``/``clause``/``action``/``evidence`` name the finding
    that decided the verdict (the first finding whose action equals the
    verdict, else the first finding); ``findings`` keeps them all.
    """
    findings = [dict(f) for f in decision.get("findings", [])]
    for finding in findings:
        finding["evidence"] = short_evidence(str(finding.get("evidence", "")))
    verdict = str(decision.get("verdict", ""))
    primary = next((f for f in findings if f.get("action") == verdict), findings[0] if findings else None)
    when = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds")
    return {
        "time": when,
        "source": source,
        "queue_id": queue_id,
        "message_id": message_id,
        "sender": sender,
        "recipients": list(recipients),
        "authenticated_user": authenticated_user,
        "direction": direction or decision.get("direction"),
        "agency": agencies[0] if agencies else None,
        "agencies": list(agencies),
        "verdict": verdict,
        "rule": primary.get("rule") if primary else None,
        "clause": primary.get("clause") if primary else None,
        "action": primary.get("action") if primary else verdict,
        "evidence": primary.get("evidence") if primary else "",
        "findings": findings,
        "policy_version": decision.get("policy_version"),
    }


def _read_last_line(fd: int) -> bytes | None:
    """The last complete line of the file behind ``fd`` (without its newline)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return None
    chunk = 4096
    data = b""
    position = size
    while position > 0:
        step = min(chunk, position)
        position -= step
        data = os.pread(fd, step, position) + data
        stripped = data.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
        chunk *= 2
    return data.rstrip(b"\n") or None


class AuditLog:
    """Writer for the audit trail. Thread-safe and multi-process-safe.

    ``path`` is either a file (one ever-growing chain, rotated by the caller)
    or a directory, in which case records go to ``audit-YYYY-MM-DD.jsonl``
    (UTC day) and the first record of a new day chains onto the last record
    of the newest earlier file, so retention can delete whole old days while
    the rest of the chain still verifies.
    """

    def __init__(self, path: Path, *, fsync: FsyncPolicy = "always") -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.daily = self.path.is_dir()
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._fd = -1
        self._read_fd = -1
        self._cached_size = -1
        self._cached_head = GENESIS_HASH
        self._genesis = GENESIS_HASH
        if not self.daily:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_open()

    def _target(self) -> Path:
        if not self.daily:
            return self.path
        return self.path / f"audit-{dt.datetime.now(dt.UTC):%Y-%m-%d}.jsonl"

    def _ensure_open(self) -> None:
        target = self._target()
        if target == self._file:
            return
        if self._fd >= 0:
            self.close()
        if self.daily:
            earlier = [p for p in audit_files(self.path) if p.name < target.name]
            self._genesis = _last_hash_of(earlier[-1]) if earlier else GENESIS_HASH
        self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._read_fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        self._file = target
        self._cached_size = -1

    @property
    def current_file(self) -> Path:
        assert self._file is not None
        return self._file

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            os.close(self._read_fd)
        self._fd = self._read_fd = -1
        self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> str:
        """Hash of the last record (the chain head)."""
        with self._lock:
            self._ensure_open()
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                return self._current_head()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _current_head(self) -> str:
        size = os.fstat(self._read_fd).st_size
        if size == self._cached_size:
            return self._cached_head
        last = _read_last_line(self._read_fd)
        head = self._genesis if last is None else _hash_of_line(last, self.current_file)
        self._cached_size, self._cached_head = size, head
        return head

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Chain and append one event; returns the record as written."""
        with self._lock:
            self._ensure_open()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                record = {k: v for k, v in event.items() if k not in ("prev", "hash")}
                record["prev"] = self._current_head()
                record["hash"] = record_hash(record)
                line = (canonical_json(record) + "\n").encode("utf-8")
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write to audit log {self.current_file}")
                if self.fsync == "always":
                    os.fsync(self._fd)
                self._cached_size = os.fstat(self._read_fd).st_size
                self._cached_head = record["hash"]
                return record
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


def _hash_of_line(line: bytes, file: Path) -> str:
    try:
        return str(json.loads(line)["hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"audit log {file} ends with a line that is not an audit record") from exc


def _last_hash_of(file: Path) -> str:
    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        last = _read_last_line(fd)
    finally:
        os.close(fd)
    return GENESIS_HASH if last is None else _hash_of_line(last, file)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head: str
    first_prev: str | None
    bad_file: str | None = None
    bad_line: int | None = None
    reason: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head": self.head,
            "first_prev": self.first_prev,
            "bad_file": self.bad_file,
            "bad_line": self.bad_line,
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def audit_files(path: Path) -> list[Path]:
    """A single log file, or every ``*.jsonl`` in a directory in name order
    (rotated files are named so that name order is time order)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(".jsonl"))
    if not path.exists():
        raise InputError(f"audit log {path} does not exist")
    return [path]


def verify_audit_log(
    path: Path | Sequence[Path], *, expected_head: str | None = None, require_genesis: bool = False,
    visit: Callable[[dict[str, Any]], None] | None = None,
) -> VerifyResult:
    """Check the hash chain over one file or several files in order.

    The chain may start at a non-genesis ``prev`` when older files were pruned
    by retention; that is a warning unless ``require_genesis``. ``visit`` is called
    with each record once its line has checked out (before the first bad line), so a
    report reads, verifies and counts in one pass over the files.
    """
    files = audit_files(path) if isinstance(path, Path) else list(path)
    previous: str | None = None
    first_prev: str | None = None
    count = 0
    warnings: list[str] = []

    def bad(file: Path, line: int, reason: str) -> VerifyResult:
        return VerifyResult(False, count, previous or GENESIS_HASH, first_prev, str(file), line, reason)

    for file in files:
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):
                    return bad(file, number, "incomplete last line (torn write or truncation)")
                try:
                    record = json.loads(raw)
                except ValueError:
                    return bad(file, number, "not valid JSON")
                if not isinstance(record, dict) or "hash" not in record or "prev" not in record:
                    return bad(file, number, "missing prev/hash")
                if record_hash(record) != record["hash"]:
                    return bad(file, number, "content does not match its hash (line edited)")
                if previous is None:
                    first_prev = str(record["prev"])
                    if first_prev != GENESIS_HASH:
                        if require_genesis:
                            return bad(file, number, "chain does not start at genesis")
                        warnings.append(
                            f"chain starts at prev {first_prev[:12]}… in {file.name} (older records pruned?)"
                        )
                elif record["prev"] != previous:
                    return bad(
                        file, number, "prev does not match the previous line (deleted, inserted or reordered)"
                    )
                previous = str(record["hash"])
                count += 1
                if visit is not None:
                    visit(record)
    head = previous or GENESIS_HASH
    if expected_head is not None and head != expected_head:
        return VerifyResult(
            False, count, head, first_prev, str(files[-1]) if files else None, count,
            f"head {head[:12]}… differs from expected {expected_head[:12]}… (records cut from the end)",
            tuple(warnings),
        )
    return VerifyResult(True, count, head, first_prev, warnings=tuple(warnings))


def iter_audit_records(path: Path) -> Iterator[dict[str, Any]]:
    for file in audit_files(path):
        with file.open("rb") as handle:
            for raw in handle:
                if raw.strip():
                    yield json.loads(raw)
