"""The policy milter: applies the decision's rules to mail at SMTP time.

Why pymilter: it is maintained (1.0.5, 2021, packaged by Debian), and it wraps
Sendmail's own libmilter, so the milter protocol (negotiation, macros,
timeouts, SMFIP_* options) is handled by the reference C implementation that
Postfix is tested against, not by hand-written protocol code. libmilter runs
one thread per SMTP connection and pymilter releases the GIL while libmilter
waits on sockets.

Process model (three layers, each for one reason):

* **supervisor** (``run_milter``; the process systemd tracks): libmilter
  installs its own signal thread that turns SIGHUP into "stop the milter",
  which would drop every open connection. The supervisor therefore owns the
  signals: SIGHUP validates the new bundle and tells the front to reload
  (SIGUSR1); SIGTERM/SIGINT stop the front gracefully. If the front dies, the
  supervisor exits non-zero and systemd restarts the unit.
* **front** (one process): libmilter's listener and connection threads. It
  buffers each message (bounded by ``max_body``), builds the envelope from the
  SMTP macros, and applies the decision (reply codes, HOLD, headers) and the
  audit record. It never changes the body or an existing header.
* **evaluators** (``workers`` processes): the CPU-heavy, hostile-input part,
  ``PolicyEngine.evaluate``. Threads alone would serialise on the GIL, and a
  process can be killed when one message overruns its ``timeout`` without
  touching the others. Each message goes to one idle worker: its bytes through
  a memory file shared with that worker (:class:`MessageBuffer`, no pickling
  and no pipe transfer of the body), the envelope and the decision over a
  pipe. A worker that times out or dies is killed and replaced, and that message gets
  the configured ``on_error`` verdict (default tempfail: the client keeps the
  mail and retries). Workers are started with the ``spawn`` method because
  forking a process that runs libmilter threads is unsafe.

Reload: a new bundle is loaded and validated in the front first; only if it
loads does the generation counter move on, and each worker reloads before its
next message. Connections and in-flight messages are not touched.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing
import multiprocessing.connection
import multiprocessing.reduction
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import Milter

from qnprov.errors import ConfigError, ExternalError
from qnprov.policy.audit import (
    AgencyResolver,
    AuditLog,
    FsyncPolicy,
    NoAgencyResolver,
    agencies_for,
    build_decision_event,
)
from qnprov.policy.domains import is_freemail

if TYPE_CHECKING:
    from qnprov.policy.engine import Decision, Envelope, PolicyEngine

log = logging.getLogger("qnprov.milter")

OnError = Literal["tempfail", "accept", "reject"]
OnOversize = Literal["quarantine", "reject", "tempfail"]
MILTER_NAME = "qnprov"
POLICY_HEADER = "X-QN-Policy"
REPLY_LINE_LIMIT = 480  # RFC 5321 reply lines are at most 512 octets with the codes


@dataclass(frozen=True)
class MilterSettings:
    """Everything ``qnprov milter`` is told on its command line."""

    socket: str = "unix:/run/qnprov/milter.sock"
    workers: int = 2
    bundle: Path | None = None
    overrides: Path | None = None
    audit_log: Path | None = None
    audit_fsync: FsyncPolicy = "always"
    agency_map: Path | None = None
    max_body: int = 50 * 1024 * 1024
    timeout: float = 30.0
    on_error: OnError = "tempfail"
    on_oversize: OnOversize = "quarantine"
    #: ``{daemon_name}`` values of the listener that Dovecot re-injects Sieve
    #: redirects through (and of the pickup path); mail there is a forward.
    reinject_daemons: frozenset[str] = frozenset({"reinject"})
    #: How long libmilter waits on the MTA before giving up a connection.
    libmilter_timeout: int = 600
    socket_umask: int = 0o007

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.max_body < 1024:
            raise ConfigError(f"--max-body must be at least 1024 bytes, got {self.max_body}")
        if self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout}")
        if not (self.socket.startswith(("unix:", "local:", "inet:", "inet6:"))):
            raise ConfigError(f"--socket must look like unix:/path or inet:port@host, got {self.socket!r}")


class EvaluationError(ExternalError):
    """The engine could not give a decision (timeout, crash, no free worker)."""


#: A message as one buffer, or as its pieces in order (header block, blank line,
#: body chunks): the process pool copies the pieces straight into the worker's
#: shared buffer, so the front never joins a large message into a new one.
MessageData = bytes | Sequence[bytes]


def _joined(message: MessageData) -> bytes:
    return message if isinstance(message, bytes) else b"".join(message)


class Evaluator(Protocol):
    version: str
    local_domains: frozenset[str]

    def evaluate(self, message: MessageData, envelope: Envelope) -> Decision: ...

    def reload(self, bundle: Path | None, overrides: Path | None) -> str: ...

    def close(self) -> None: ...


#: Freed heap memory glibc may keep per arena instead of handing it back (see tune_malloc).
MALLOC_KEEP_BYTES = 8 << 20


def tune_malloc(keep: int = MALLOC_KEEP_BYTES) -> bool:
    """Let glibc keep up to ``keep`` bytes of freed heap for the next message.

    By default glibc trims the top of a heap as soon as more than about twice its
    (dynamic, 128 KiB and up) mmap threshold is free, so the buffers of every large
    message (the body chunks in the front; the body, its decoded bytes and its text in
    an evaluator) were paged in afresh each time: page faults and madvise were ~10% of
    the front's CPU and ~20% of an evaluator's on 1 MB mail. Blocks of ``keep`` bytes
    or more are still mmap()ed and returned when freed, so one huge message does not
    stay resident. Returns False where there is no glibc mallopt (nothing changes).
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(m_mmap_threshold, keep)) and bool(mallopt(m_trim_threshold, keep))


def load_engine(bundle: Path | None, overrides: Path | None) -> PolicyEngine:
    from qnprov.policy.engine import PolicyEngine

    return PolicyEngine.load(bundle, overrides)


class InlineEvaluator:
    """Evaluates in the calling thread (``--workers 0``, tests, the CLI check).

    No timeout can be enforced here; the engine's own limits still apply.
    """

    def __init__(self, bundle: Path | None = None, overrides: Path | None = None) -> None:
        self._engine = load_engine(bundle, overrides)
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self._engine.version

    @property
    def local_domains(self) -> frozenset[str]:
        return self._engine.local_domains

    def evaluate(self, message: MessageData, envelope: Envelope) -> Decision:
        engine = self._engine
        try:
            return engine.evaluate(_joined(message), envelope)
        except Exception as exc:
            raise EvaluationError(f"engine failed: {type(exc).__name__}: {exc}") from exc

    def reload(self, bundle: Path | None, overrides: Path | None) -> str:
        engine = load_engine(bundle, overrides)
        with self._lock:
            self._engine = engine
        return engine.version

    def close(self) -> None:
        return None


class MessageBuffer:
    """A memory file (memfd) shared by the front and one evaluator, holding the message.

    The front writes the message into it and sends only its length; the worker
    maps the same file and takes the bytes with one copy. Sent through the pipe,
    a 1 MB message was pickled, written in socket-buffer-sized pieces (a context
    switch each), read back into growing buffers and unpickled: several copies
    and page-fault storms on both sides. The file keeps ``INITIAL`` bytes; a
    larger message grows it for that message only (it shrinks back afterwards,
    so the pages of one huge message are not kept by both processes).
    """

    INITIAL = 4 << 20

    def __init__(self) -> None:
        self.fd = os.memfd_create("qnprov-message", os.MFD_CLOEXEC)
        self.size = 0
        self._map: mmap.mmap | None = None
        self._resize(self.INITIAL)

    def _resize(self, size: int) -> None:
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        if self._map is not None:
            self._map.close()
            self._map = None
        os.ftruncate(self.fd, size)
        self._map = mmap.mmap(self.fd, size)
        self.size = size

    def write(self, message: MessageData) -> int:
        """Copy the message in; returns its length."""
        parts = (message,) if isinstance(message, bytes) else message
        total = sum(len(part) for part in parts)
        if total > self.size:
            self._resize(total)
        else:
            self.trim()
        assert self._map is not None
        position = 0
        for part in parts:
            end = position + len(part)
            self._map[position:end] = part
            position = end
        return total

    def trim(self) -> None:
        """Give back the pages of a message larger than ``INITIAL``."""
        if self.size > self.INITIAL:
            self._resize(self.INITIAL)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _MessageReader:
    """The worker's side of :class:`MessageBuffer`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: mmap.mmap | None = None

    def read(self, length: int, size: int) -> bytes:
        if self._map is None or len(self._map) != size:
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self.fd, size, prot=mmap.PROT_READ)
        return self._map[:length]


def _worker_main(conn: Connection, bundle: Path | None, overrides: Path | None) -> None:
    """Evaluator process: answers ("eval", length, buffer size, envelope) and ("reload", bundle, overrides).

    After "ready" the front sends the descriptor of the worker's :class:`MessageBuffer`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    tune_malloc()
    try:
        engine = load_engine(bundle, overrides)
        conn.send(("ready", engine.version))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        reader = _MessageReader(multiprocessing.reduction.recv_handle(conn))
    except (EOFError, OSError):
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        kind = request[0]
        try:
            if kind == "eval":
                message = reader.read(request[1], request[2])
                conn.send(("ok", engine.evaluate(message, request[3])))
            elif kind == "reload":
                engine = load_engine(request[1], request[2])
                conn.send(("ok", engine.version))
            elif kind == "stop":
                return
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class PolicySnapshot:
    """Private copies of the bundle directory and the overrides file.

    Workers load lazily (before their next message after a reload), so they
    must load exactly what the front validated, not whatever the operator's
    files contain by then. The packaged bundle is immutable and not copied.
    """

    PREFIX = "qnprov-policy-"

    def __init__(self, bundle: Path | None, overrides: Path | None) -> None:
        self._root = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-"))
        self.bundle: Path | None = None
        self.overrides: Path | None = None
        if bundle is not None:
            shutil.copytree(bundle.parent, self._root / "bundle")
            self.bundle = self._root / "bundle" / bundle.name
        if overrides is not None:
            self.overrides = self._root / "overrides.yml"
            shutil.copyfile(overrides, self.overrides)

    def remove(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    @classmethod
    def remove_stale(cls) -> None:
        """Snapshots left by a front that was killed (SIGKILL skips its clean-up)."""
        for path in Path(tempfile.gettempdir()).glob(f"{cls.PREFIX}*-*"):
            pid_text = path.name.removeprefix(cls.PREFIX).split("-", 1)[0]
            if not pid_text.isdigit() or int(pid_text) == os.getpid():
                continue
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:
                continue  # alive, someone else's


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    generation: int
    buffer: MessageBuffer | None = None


class ProcessPoolEvaluator:
    """N evaluator processes; one message per worker at a time; per-message timeout."""

    def __init__(
        self,
        workers: int,
        bundle: Path | None,
        overrides: Path | None,
        *,
        timeout: float,
        start_timeout: float = 60.0,
    ) -> None:
        if workers < 1:
            raise ConfigError("a process pool needs at least one worker")
        self._context = multiprocessing.get_context("spawn")
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        PolicySnapshot.remove_stale()
        snapshot = PolicySnapshot(bundle, overrides)
        try:
            engine = load_engine(snapshot.bundle, snapshot.overrides)  # validate before starting anyone
        except Exception:
            snapshot.remove()
            raise
        self.version = engine.version
        self.local_domains = engine.local_domains
        self._snapshots = [snapshot]
        self._bundle, self._overrides = snapshot.bundle, snapshot.overrides
        self._generation = 0
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[int] = set()
        self._closed = False
        started = [self._spawn() for _ in range(workers)]
        for worker in started:
            self._await_ready(worker)
            self._idle.put(worker)
        self.size = workers

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child, self._bundle, self._overrides), daemon=True, name="qnprov-eval"
        )
        process.start()
        child.close()
        worker = _Worker(process, parent, self._generation)
        with self._lock:
            self._all.add(id(worker))
        return worker

    def _await_ready(self, worker: _Worker) -> None:
        if not worker.conn.poll(self._start_timeout):
            self._kill(worker)
            raise EvaluationError("evaluator process did not start in time")
        try:
            status, detail = worker.conn.recv()
        except (EOFError, OSError) as exc:
            self._kill(worker)
            raise EvaluationError(f"evaluator process died during start-up: {exc!r}") from exc
        if status != "ready":
            self._kill(worker)
            raise EvaluationError(f"evaluator process failed to start: {detail}")
        try:
            worker.buffer = MessageBuffer()
            multiprocessing.reduction.send_handle(worker.conn, worker.buffer.fd, worker.process.pid)
        except OSError as exc:
            self._kill(worker)
            raise EvaluationError(f"could not share the message buffer with an evaluator: {exc!r}") from exc

    def _kill(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(id(worker))
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()
        if worker.buffer is not None:
            worker.buffer.close()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker that misbehaved and put a fresh one in its place."""
        self._kill(worker)
        if self._closed:
            return
        try:
            fresh = self._spawn()
            self._await_ready(fresh)
        except EvaluationError:
            log.exception("could not replace an evaluator process; pool shrinks by one")
            return
        self._idle.put(fresh)

    def _call(self, worker: _Worker, request: tuple[Any, ...], timeout: float) -> Any:
        try:
            worker.conn.send(request)
            if not worker.conn.poll(timeout):
                raise TimeoutError
            status, value = worker.conn.recv()
        except TimeoutError:
            threading.Thread(target=self._replace, args=(worker,), daemon=True).start()
            raise EvaluationError(f"evaluation exceeded {timeout:g}s; worker killed") from None
        except (EOFError, OSError, BrokenPipeError) as exc:
            threading.Thread(target=self._replace, args=(worker,), daemon=True).start()
            raise EvaluationError(f"evaluator process died: {exc!r}") from exc
        if status != "ok":
            self._idle.put(worker)
            raise EvaluationError(f"engine failed: {value}")
        return value

    def evaluate(self, message: MessageData, envelope: Envelope) -> Decision:
        deadline = time.monotonic() + self._timeout
        try:
            worker = self._idle.get(timeout=self._timeout)
        except queue.Empty:
            raise EvaluationError(f"no evaluator free within {self._timeout:g}s") from None
        generation, bundle, overrides = self._generation, self._bundle, self._overrides
        if worker.generation != generation:
            self._call(worker, ("reload", bundle, overrides), self._start_timeout)
            worker.generation = generation
        assert worker.buffer is not None
        length = worker.buffer.write(message)
        remaining = max(0.001, deadline - time.monotonic())
        decision: Decision = self._call(worker, ("eval", length, worker.buffer.size, envelope), remaining)
        worker.buffer.trim()
        self._idle.put(worker)
        return decision

    def reload(self, bundle: Path | None, overrides: Path | None) -> str:
        snapshot = PolicySnapshot(bundle, overrides)
        try:
            engine = load_engine(snapshot.bundle, snapshot.overrides)  # raises on a bad bundle; old one stays
        except Exception:
            snapshot.remove()
            raise
        with self._lock:
            self._bundle, self._overrides = snapshot.bundle, snapshot.overrides
            self.version = engine.version
            self.local_domains = engine.local_domains
            self._generation += 1
            self._snapshots.append(snapshot)
            # Keep the previous generation: a worker may be reloading from it right now.
            while len(self._snapshots) > 2:
                self._snapshots.pop(0).remove()
        return engine.version

    def worker_pids(self) -> list[int]:
        pids: list[int] = []
        for worker in list(self._idle.queue):
            if worker.process.pid is not None:
                pids.append(worker.process.pid)
        return pids

    def close(self) -> None:
        self._closed = True
        for snapshot in self._snapshots:
            snapshot.remove()
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
            worker.process.join(2)
            self._kill(worker)


def ascii_reply(text: str) -> str:
    """SMTP reply text must be printable ASCII (and libmilter rejects a lone '%').

    Vietnamese loses its tone marks here; the full text is in the audit record
    and in the bundle, the reply only has to tell the sender which clause.
    """
    text = text.replace("đ", "d").replace("Đ", "D")
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in folded).replace("%", " percent")
    return cleaned[: REPLY_LINE_LIMIT * 3]


def synthetic_decision(
    verdict: str,
    *,
    rule: str,
    clause: str,
    evidence: str,
    envelope: Envelope,
    evaluator: Evaluator,
    reply: tuple[str, str, str] | None,
    location: str = "message",
) -> Decision:
    """A decision the front takes itself (oversize, engine failure, forward guard)."""
    from qnprov.policy.engine import Decision, Finding, derive_direction

    return Decision(
        verdict=verdict,  # type: ignore[arg-type]
        findings=(Finding(rule=rule, clause=clause, action=verdict, location=location, evidence=evidence),),
        policy_version=evaluator.version,
        direction=derive_direction(envelope, evaluator.local_domains),
        add_headers=(),
        reply=reply,
    )


@dataclass
class MilterRuntime:
    """Shared by every connection thread of the front process."""

    settings: MilterSettings
    evaluator: Evaluator
    audit: AuditLog | None = None
    agencies: AgencyResolver = field(default_factory=NoAgencyResolver)
    decisions: int = 0

    def record(
        self,
        decision: Decision,
        envelope: Envelope,
        message_id: str | None,
    ) -> None:
        self.decisions += 1
        if self.audit is None:
            return
        event = build_decision_event(
            decision=decision.to_json(),
            queue_id=envelope.queue_id,
            message_id=message_id,
            sender=envelope.mail_from,
            recipients=envelope.rcpts,
            agencies=agencies_for(self.agencies, decision.direction, envelope.mail_from, envelope.rcpts),
            authenticated_user=envelope.authenticated_user,
            direction=decision.direction,
        )
        try:
            self.audit.append(event)
        except OSError:
            # A decision we cannot record must not pass silently either:
            # the caller turns this into the on_error verdict.
            log.exception("audit log write failed")
            raise

    def error_decision(self, envelope: Envelope, reason: str) -> Decision:
        on_error = self.settings.on_error
        reply: tuple[str, str, str] | None = None
        if on_error == "tempfail":
            reply = ("451", "4.3.0", "Policy check temporarily unavailable, please retry later")
        elif on_error == "reject":
            reply = ("550", "5.7.1", "Message could not be checked against the mail policy")
        return synthetic_decision(
            on_error, rule="milter-error", clause="-", evidence=reason, envelope=envelope,
            evaluator=self.evaluator, reply=reply,
        )

    def oversize_decision(self, envelope: Envelope, size: int) -> Decision:
        verdict = self.settings.on_oversize
        text = (
            f"Thu qua lon de kiem tra (> {self.settings.max_body} bytes), khong the kiem tra theo khoan 1.3(1)"
            f" / Message too large to inspect (> {self.settings.max_body} bytes): cannot be checked for 1.3(1)"
        )
        reply = {"reject": ("550", "5.7.1", text), "tempfail": ("452", "4.3.1", text)}.get(verdict)
        return synthetic_decision(
            verdict, rule="cannot-inspect-size", clause="1.3(1)",
            evidence=f"message of at least {size} bytes exceeds the {self.settings.max_body}-byte inspection limit",
            envelope=envelope, evaluator=self.evaluator, reply=reply,
        )

    def decide(self, message: MessageData, envelope: Envelope) -> Decision:
        try:
            return self.evaluator.evaluate(message, envelope)
        except EvaluationError as exc:
            log.error("queue %s: %s; applying on_error=%s", envelope.queue_id, exc, self.settings.on_error)
            return self.error_decision(envelope, str(exc))

    def forward_guard(self, envelope: Envelope, daemon_name: str | None, rcpt: str) -> Decision | None:
        """Clause 1.3(2) on the re-injection path: a non-null sender re-injected
        towards a free mailbox is a forward (Sieve redirect, user rule).

        A null sender is decided at end of message (:meth:`null_sender_forward_guard`):
        a Sieve redirect of a bounce or an auto-reply keeps the null sender (RFC 5228
        section 4.2), and so does a vacation reply; only the headers tell them apart.
        """
        if daemon_name not in self.settings.reinject_daemons or not envelope.mail_from:
            return None
        if not is_freemail(rcpt):
            return None
        return self._forward_refusal(envelope, f"forward to {rcpt} via {daemon_name}", "envelope")

    def null_sender_forward_guard(
        self, envelope: Envelope, daemon_name: str | None, headers: Sequence[tuple[str, bytes]],
    ) -> Decision | None:
        """Clause 1.3(2) for null-sender mail re-injected towards free mailboxes.

        Only an auto-reply to the free-mail recipient itself goes out (a vacation reply,
        or a Sieve reject, to a citizen who wrote from a free mailbox); a redirect of a
        null-sender message, or a notification, is refused like any other forward.
        """
        if daemon_name not in self.settings.reinject_daemons or envelope.mail_from:
            return None
        freemail = [rcpt for rcpt in envelope.rcpts if is_freemail(rcpt)]
        if not freemail:
            return None
        why = auto_reply_refusal(headers, freemail)
        if why is None:
            return None
        return self._forward_refusal(
            envelope, f"null-sender forward to {', '.join(freemail)} via {daemon_name}: {why}", "message")

    def _forward_refusal(self, envelope: Envelope, evidence: str, location: str) -> Decision:
        text = (
            "Chuyen tiep thu cong vu sang hop thu mien phi bi cam (khoan 1.3(2))"
            " / Forwarding official mail to a free mailbox is forbidden (clause 1.3(2))"
        )
        return synthetic_decision(
            "reject", rule="freemail-forward", clause="1.3(2)", evidence=evidence,
            envelope=envelope, evaluator=self.evaluator, reply=("550", "5.7.1", text), location=location,
        )


#: Pigeonhole prepends this to every message its ``redirect`` action sends.
SIEVE_REDIRECT_HEADER = "x-sieve-redirected-from"


def _header_addresses(values: Sequence[bytes]) -> set[str]:
    from email.utils import getaddresses

    text = [value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ") for value in values]
    return {addr.strip().lower().rstrip(".") for _, addr in getaddresses(text) if addr.strip()}


def auto_reply_refusal(headers: Sequence[tuple[str, bytes]], recipients: Sequence[str]) -> str | None:
    """Why a null-sender message to ``recipients`` is not an auto-reply to them (None: it is one).

    An auto-reply (RFC 3834) says ``Auto-Submitted: auto-replied``, is addressed to the
    person it answers (the ``To`` header names every envelope recipient) and was not
    redirected: Pigeonhole adds ``X-Sieve-Redirected-From`` to every redirect, on top of
    whatever the original message carried, so a forged ``Auto-Submitted`` in a
    redirected message does not make it a reply.
    """
    names = [name.lower() for name, _ in headers]
    if SIEVE_REDIRECT_HEADER in names:
        return "Sieve redirect"
    auto = [value for name, value in headers if name.lower() == "auto-submitted"]
    if len(auto) != 1:
        return "not an auto-reply (Auto-Submitted missing or repeated)"
    keyword = auto[0].decode("ascii", "replace").split(";")[0].split("(")[0].strip().lower()
    if keyword != "auto-replied":
        return f"not an auto-reply (Auto-Submitted: {keyword or 'empty'})"
    addressed = _header_addresses([value for name, value in headers if name.lower() == "to"])
    missing = [rcpt for rcpt in recipients if rcpt.lower().rstrip(".") not in addressed]
    if missing:
        return f"the reply is not addressed to {', '.join(missing)}"
    return None


def _address(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    return raw


def _flatten(value: bytes) -> str:
    return value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").strip()


class PolicyMilter(Milter.Base):
    """One instance per SMTP connection (libmilter thread)."""

    runtime: MilterRuntime  # set by serve() before the first connection

    def __init__(self) -> None:
        self.daemon_name: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.mail_from = ""
        self.rcpts: list[str] = []
        self.auth_user: str | None = None
        self.headers: list[tuple[str, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.oversize = False
        self.message_id: str | None = None

    # @noreply: Postfix does not wait for an answer to these callbacks, which
    # saves one round trip per header line and body chunk.
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.daemon_name = self.getsymval("{daemon_name}")
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset()
        self.mail_from = _address(mailfrom)
        self.auth_user = self.getsymval("{auth_authen}") or None
        return Milter.CONTINUE

    def _envelope(self, queue_id: str | None = None) -> Envelope:
        from qnprov.policy.engine import Envelope

        direction: Literal["outbound"] | None = (
            "outbound" if self.daemon_name in self.runtime.settings.reinject_daemons else None
        )
        return Envelope(
            mail_from=self.mail_from,
            rcpts=tuple(self.rcpts),
            direction=direction,
            authenticated_user=self.auth_user,
            queue_id=queue_id,
        )

    def envrcpt(self, to: str, *params: str) -> int:
        rcpt = _address(to)
        refused = None
        if self.daemon_name in self.runtime.settings.reinject_daemons:  # only the re-injection path forwards
            refused = self.runtime.forward_guard(self._envelope(self.getsymval("{i}")), self.daemon_name, rcpt)
        if refused is not None:
            forward_envelope = self._envelope(self.getsymval("{i}"))
            forward_envelope = type(forward_envelope)(
                mail_from=forward_envelope.mail_from, rcpts=(rcpt,), direction="outbound",
                authenticated_user=forward_envelope.authenticated_user, queue_id=forward_envelope.queue_id,
            )
            try:
                self.runtime.record(refused, forward_envelope, None)
            except OSError:
                return self._finish(self.runtime.error_decision(forward_envelope, "audit log unwritable"))
            return self._finish(refused)
        self.rcpts.append(rcpt)
        return Milter.CONTINUE

    @Milter.decode("bytes")
    @Milter.noreply
    def header(self, name: str, value: bytes) -> int:
        self.size += len(name) + len(value) + 4
        if name.lower() == "message-id" and self.message_id is None:
            self.message_id = _flatten(value)[:200]
        if self.size > self.runtime.settings.max_body:
            self.oversize = True
        else:
            self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.oversize or self.size > self.runtime.settings.max_body:
            # Keep reading (the MTA must get our verdict at end of message)
            # but stop buffering: memory stays bounded by max_body.
            self.oversize = True
            self.chunks.clear()
            return Milter.CONTINUE
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def message_parts(self) -> list[bytes]:
        """The message as received, in pieces: header block, blank line, body chunks."""
        head = b"".join(name.encode("ascii", "replace") + b": " + value + b"\r\n" for name, value in self.headers)
        return [head, b"\r\n", *self.chunks]

    def eom(self) -> int:
        envelope = self._envelope(self.getsymval("{i}"))
        refused = None
        if self.daemon_name in self.runtime.settings.reinject_daemons:
            # Headers beyond max_body are not kept, so an oversize message is judged on
            # what was kept; a redirect header sits at the top and is always among them.
            refused = self.runtime.null_sender_forward_guard(envelope, self.daemon_name, self.headers)
        if refused is not None:
            self.chunks = []
            try:
                self.runtime.record(refused, envelope, self.message_id)
            except OSError:
                refused = self.runtime.error_decision(envelope, "audit log unwritable")
            return self._finish(refused)
        if self.oversize:
            decision = self.runtime.oversize_decision(envelope, self.size)
        else:
            decision = self.runtime.decide(self.message_parts(), envelope)
        self.chunks = []
        try:
            self.runtime.record(decision, envelope, self.message_id)
        except OSError:
            decision = self.runtime.error_decision(envelope, "audit log unwritable")
        return self._finish(decision)

    def _finish(self, decision: Decision) -> int:
        verdict = decision.verdict
        if verdict == "reject":
            self._reply(decision.reply or ("550", "5.7.1", "Message refused by the mail policy"))
            return Milter.REJECT
        if verdict == "tempfail":
            self._reply(decision.reply or ("451", "4.3.0", "Policy check temporarily unavailable"))
            return Milter.TEMPFAIL
        headers = list(decision.add_headers)
        if verdict in ("tag", "quarantine") and not any(n.lower() == POLICY_HEADER.lower() for n, _ in headers):
            headers.append((POLICY_HEADER, policy_header_value(decision)))
        for name, value in headers:
            self.addheader(name, ascii_header(value))
        if verdict == "quarantine":
            self.quarantine(ascii_reply(quarantine_reason(decision)))
        return Milter.CONTINUE

    def _reply(self, reply: tuple[str, str, str]) -> None:
        code, xcode, text = reply
        # Long bilingual texts become a multi-line reply, broken at spaces.
        lines = textwrap.wrap(ascii_reply(" ".join(text.split())), width=REPLY_LINE_LIMIT) if text.strip() else []
        self.setreply(code, xcode, *(lines or ["Refused by policy"]))


def policy_header_value(decision: Decision) -> str:
    parts = [f"{decision.verdict}"]
    for finding in decision.findings:
        parts.append(f"rule={finding.rule}; clause={finding.clause}; action={finding.action}")
    parts.append(f"policy={decision.policy_version}")
    return "; ".join(parts)


def quarantine_reason(decision: Decision) -> str:
    held = [f for f in decision.findings if f.action == "quarantine"] or list(decision.findings)
    if not held:
        return "qnprov policy hold"
    first = held[0]
    return f"qnprov {first.clause} {first.rule}: {first.evidence}"[:200]


def ascii_header(value: str) -> str:
    """Header values we add stay 7-bit so no downstream MTA rewrites the message."""
    from email.header import Header

    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=998)


# --- process management --------------------------------------------------


def build_runtime(settings: MilterSettings, evaluator: Evaluator | None = None) -> MilterRuntime:
    from qnprov.policy.audit import StaticAgencyMap

    if evaluator is None:
        evaluator = cast(Evaluator, (
            ProcessPoolEvaluator(settings.workers, settings.bundle, settings.overrides, timeout=settings.timeout)
            if settings.workers > 0
            else InlineEvaluator(settings.bundle, settings.overrides)
        ))
    audit = AuditLog(settings.audit_log, fsync=settings.audit_fsync) if settings.audit_log else None
    agencies: AgencyResolver = (
        StaticAgencyMap.from_file(settings.agency_map) if settings.agency_map else NoAgencyResolver()
    )
    return MilterRuntime(settings=settings, evaluator=evaluator, audit=audit, agencies=agencies)


def _prepare_socket(spec: str) -> None:
    if spec.startswith(("unix:", "local:")):
        path = Path(spec.split(":", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)


def serve_front(settings: MilterSettings, ready: Callable[[], None] | None = None) -> None:
    """Run libmilter in this process's main thread until it is told to stop.

    Reload arrives as SIGUSR1 (from the supervisor). Python runs signal
    handlers only in the main thread, which sits inside libmilter, so the
    handler's C half writes the signal number to a wakeup socket and a small
    thread does the reload.
    """
    tune_malloc()
    runtime = build_runtime(settings)
    PolicyMilter.runtime = runtime
    Milter.factory = PolicyMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.QUARANTINE)

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def reload_loop() -> None:
        # Only libmilter's signal thread may take SIGTERM/SIGHUP/SIGINT.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP, signal.SIGINT})
        while True:
            data = reader.recv(64)
            if not data:
                return
            if signal.SIGUSR1 in data:
                try:
                    version = runtime.evaluator.reload(settings.bundle, settings.overrides)
                    log.info("policy bundle reloaded: version %s", version)
                except Exception as exc:
                    log.error("reload refused, keeping the running bundle: %s", exc)

    threading.Thread(target=reload_loop, name="qnprov-reload", daemon=True).start()
    _prepare_socket(settings.socket)
    os.umask(settings.socket_umask)
    log.info(
        "qnprov milter on %s: %s workers, bundle version %s, on_error=%s, max_body=%d",
        settings.socket, settings.workers, runtime.evaluator.version, settings.on_error, settings.max_body,
    )
    if runtime.audit is not None:
        log.info("audit log %s head %s", runtime.audit.current_file, runtime.audit.head())
    if ready is not None:
        ready()
    try:
        Milter.runmilter(MILTER_NAME, settings.socket, timeout=settings.libmilter_timeout)
    finally:
        runtime.evaluator.close()
        if runtime.audit is not None:
            log.info("audit log head at stop %s", runtime.audit.head())
            runtime.audit.close()


def _front_entry(settings: MilterSettings) -> None:
    _configure_logging()
    try:
        serve_front(settings)
    except Exception:
        log.exception("milter front stopped on an error")
        sys.exit(1)


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s[%(process)d]: %(levelname)s %(message)s")


def run_milter(settings: MilterSettings) -> int:
    """Supervisor: validate, start the front, translate signals, exit when it dies."""
    _configure_logging()
    load_engine(settings.bundle, settings.overrides)  # a bad bundle stops here with one clear line
    if settings.audit_log is not None:
        AuditLog(settings.audit_log, fsync="never").close()  # fail early if the log is unwritable
    context = multiprocessing.get_context("spawn")
    front = context.Process(target=_front_entry, args=(settings,), name="qnprov-milter-front")
    front.start()
    stopping = threading.Event()

    def on_hup(signum: int, frame: object) -> None:
        try:
            version = load_engine(settings.bundle, settings.overrides).version
        except Exception as exc:
            log.error("SIGHUP: new bundle rejected, keeping the running one: %s", exc)
            return
        log.info("SIGHUP: bundle %s validated; front reloads", version)
        if front.pid is not None:
            os.kill(front.pid, signal.SIGUSR1)

    def on_stop(signum: int, frame: object) -> None:
        stopping.set()
        if front.pid is not None and front.is_alive():
            # SIGTERM makes libmilter stop accepting and return from its main loop.
            os.kill(front.pid, signal.SIGTERM)

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    while front.is_alive():
        front.join(0.5)
    code = front.exitcode or 0
    if stopping.is_set():
        return 0
    log.error("milter front exited with status %s", code)
    return code if code > 0 else 1


def parse_reinject_daemons(values: Sequence[str]) -> frozenset[str]:
    names = {v.strip() for value in values for v in value.split(",") if v.strip()}
    return frozenset(names)
