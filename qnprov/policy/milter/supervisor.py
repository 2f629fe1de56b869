"""The supervisor and the front process: signals and lifecycle.

libmilter installs its own signal thread that turns SIGHUP into "stop the milter", which
would drop every open connection. The supervisor (:func:`run_milter`, the process systemd
tracks) therefore owns the signals: SIGHUP validates the new bundle and tells the front to
reload (SIGUSR1); SIGTERM/SIGINT stop the front gracefully. If the front dies, the
supervisor exits non-zero and systemd restarts the unit. The front (:func:`serve_front`)
runs libmilter with :class:`~qnprov.policy.milter.protocol.PolicyMilter` and builds the
evaluator (inline or a process pool) behind it.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import multiprocessing.reduction
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import Milter

from qnprov.policy.agencies import AgencyResolver, NoAgencyResolver, StaticAgencyMap
from qnprov.policy.audit import AuditLog
from qnprov.policy.milter.blocklist import BlockList
from qnprov.policy.milter.decisions import MilterRuntime
from qnprov.policy.milter.evaluator import Evaluator, InlineEvaluator, load_engine
from qnprov.policy.milter.pool import ProcessPoolEvaluator
from qnprov.policy.milter.protocol import PolicyMilter
from qnprov.policy.milter.settings import MILTER_NAME, MilterSettings

log = logging.getLogger("qnprov.milter")


def build_runtime(settings: MilterSettings, evaluator: Evaluator | None = None) -> MilterRuntime:
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
    return MilterRuntime(settings=settings, evaluator=evaluator, audit=audit, agencies=agencies,
                         blocks=BlockList.load(settings.blocklist))


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
                try:
                    count = runtime.reload_blocks()
                    log.info("block list reloaded: %d entries", count)
                except Exception as exc:
                    log.error("block list refused, keeping the running one: %s", exc)

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
    BlockList.load(settings.blocklist)  # and so does a broken block list
    if settings.audit_log is not None:
        AuditLog(settings.audit_log, fsync="never").close()  # fail early if the log is unwritable
    context = multiprocessing.get_context("spawn")
    front = context.Process(target=_front_entry, args=(settings,), name="qnprov-milter-front")
    front.start()
    stopping = threading.Event()

    def on_hup(signum: int, frame: object) -> None:
        try:
            version = load_engine(settings.bundle, settings.overrides).version
            BlockList.load(settings.blocklist)
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
