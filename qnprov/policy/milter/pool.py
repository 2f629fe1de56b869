"""The evaluator processes: a pool of workers and the shared message buffer.

``PolicyEngine.evaluate`` is the CPU-heavy, hostile-input part. Threads alone would
serialise on the GIL, and a process can be killed when one message overruns its
``timeout`` without touching the others. Each message goes to one idle worker: its bytes
through a memory file shared with that worker (:class:`MessageBuffer`, no pickling and no
pipe transfer of the body), the envelope and the decision over a pipe. A worker that times
out or dies is killed and replaced, and the caller gets :class:`EvaluationError` (the front
turns it into the configured ``on_error`` verdict). Workers are started with the ``spawn``
method because forking a process that runs libmilter threads is unsafe.

Reload: a new bundle is loaded and validated here first, from a private snapshot
(:class:`PolicySnapshot`); only if it loads does the generation counter move on, and each
worker reloads before its next message.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import multiprocessing.reduction
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from qnprov.errors import ConfigError
from qnprov.policy.engine import Decision, Envelope, PolicyEngine
from qnprov.policy.milter.evaluator import EvaluationError, MessageData, load_engine

log = logging.getLogger("qnprov.milter")


class MessageBuffer:
    """A memory file (memfd) shared by the front and one evaluator, holding the message.

    The front writes the message into it and sends only its length; the worker
    maps the same file and takes the bytes with one copy. Sent through the pipe,
    a 1 MB message was pickled, written in socket-buffer-sized pieces (a context
    switch each), read back into growing buffers and unpickled: several copies
    and page-fault storms on both sides. The file keeps ``INITIAL`` bytes; a
    larger message grows it for that message only (it shrinks back afterwards,
    so the pages of one huge message are not kept by both processes).
    benchmarks/milter_pool.py measures it against the pipe: 17-22% less CPU (front plus
    evaluator) per 1 MB message, the front's share 37-39% less.
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


def _worker_main(conn: Connection, bundle: Path | None, overrides: Path | None, shared_buffer: bool = True) -> None:
    """Evaluator process: answers ("eval", length, buffer size, envelope) and ("reload", bundle, overrides).

    After "ready" the front sends the descriptor of the worker's :class:`MessageBuffer`.
    Without a shared buffer (``shared_buffer=False``, for benchmarks/milter_pool.py only) the
    message comes pickled through the pipe instead: ("eval-bytes", message, envelope).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    try:
        engine = load_engine(bundle, overrides)
        conn.send(("ready", engine.version))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    reader: _MessageReader | None = None
    if shared_buffer:
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
            if kind == "eval" and reader is not None:
                message = reader.read(request[1], request[2])
                conn.send(("ok", engine.evaluate(message, request[3])))
            elif kind == "eval-bytes":
                conn.send(("ok", engine.evaluate(request[1], request[2])))
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

    @classmethod
    def validated(cls, bundle: Path | None, overrides: Path | None) -> tuple[PolicySnapshot, PolicyEngine]:
        """A snapshot of the files and the engine loaded from it. When the engine does not
        load (a bad bundle or overrides file), the snapshot is removed and the error raised."""
        snapshot = cls(bundle, overrides)
        try:
            return snapshot, load_engine(snapshot.bundle, snapshot.overrides)
        except Exception:
            snapshot.remove()
            raise


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    generation: int
    buffer: MessageBuffer | None = None


class ProcessPoolEvaluator:
    """N evaluator processes; one message per worker at a time; per-message timeout.

    ``shared_buffer`` exists so that benchmarks/milter_pool.py can measure what the
    :class:`MessageBuffer` saves: with ``shared_buffer=False`` messages are pickled through
    the pipe. The milter always runs with the shared buffer.
    """

    def __init__(
        self,
        workers: int,
        bundle: Path | None,
        overrides: Path | None,
        *,
        timeout: float,
        start_timeout: float = 60.0,
        shared_buffer: bool = True,
    ) -> None:
        if workers < 1:
            raise ConfigError("a process pool needs at least one worker")
        self._context = multiprocessing.get_context("spawn")
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._shared_buffer = shared_buffer
        self._lock = threading.Lock()
        PolicySnapshot.remove_stale()
        snapshot, engine = PolicySnapshot.validated(bundle, overrides)  # validate before starting anyone
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
            target=_worker_main, args=(child, self._bundle, self._overrides, self._shared_buffer),
            daemon=True, name="qnprov-eval",
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
        if not self._shared_buffer:
            return
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
        if worker.buffer is None:  # shared_buffer=False: the message goes pickled through the pipe
            whole = message if isinstance(message, bytes) else b"".join(message)
            request: tuple[Any, ...] = ("eval-bytes", whole, envelope)
        else:
            length = worker.buffer.write(message)
            request = ("eval", length, worker.buffer.size, envelope)
        remaining = max(0.001, deadline - time.monotonic())
        decision: Decision = self._call(worker, request, remaining)
        if worker.buffer is not None:
            worker.buffer.trim()
        self._idle.put(worker)
        return decision

    def reload(self, bundle: Path | None, overrides: Path | None) -> str:
        snapshot, engine = PolicySnapshot.validated(bundle, overrides)  # raises on a bad bundle; old one stays
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
