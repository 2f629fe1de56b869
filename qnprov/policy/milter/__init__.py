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

Modules: :mod:`.settings` (the command line), :mod:`.evaluator` (the interface the
front calls, and the inline evaluator), :mod:`.pool` (the evaluator processes, their
shared buffer), :mod:`.decisions` (what the front decides itself and
how a decision becomes replies, headers and an audit record), :mod:`.protocol` (the
libmilter callbacks, free of process management) and :mod:`.supervisor` (signals and
lifecycle). The names below are re-exported so ``qnprov.policy.milter.X`` keeps working.
"""

from __future__ import annotations

from qnprov.policy.milter.decisions import (
    SIEVE_REDIRECT_HEADER,
    MilterRuntime,
    ascii_header,
    ascii_reply,
    auto_reply_refusal,
    policy_header_value,
    quarantine_reason,
    synthetic_decision,
)
from qnprov.policy.milter.evaluator import EvaluationError, Evaluator, InlineEvaluator, MessageData, load_engine
from qnprov.policy.milter.pool import (
    MessageBuffer,
    PolicySnapshot,
    ProcessPoolEvaluator,
)
from qnprov.policy.milter.protocol import PolicyMilter
from qnprov.policy.milter.settings import (
    MILTER_NAME,
    POLICY_HEADER,
    REPLY_LINE_LIMIT,
    MilterSettings,
    OnError,
    OnOversize,
    parse_reinject_daemons,
)
from qnprov.policy.milter.supervisor import build_runtime, run_milter, serve_front

__all__ = [
    "MILTER_NAME",
    "POLICY_HEADER",
    "REPLY_LINE_LIMIT",
    "SIEVE_REDIRECT_HEADER",
    "EvaluationError",
    "Evaluator",
    "InlineEvaluator",
    "MessageBuffer",
    "MessageData",
    "MilterRuntime",
    "MilterSettings",
    "OnError",
    "OnOversize",
    "PolicyMilter",
    "PolicySnapshot",
    "ProcessPoolEvaluator",
    "ascii_header",
    "ascii_reply",
    "auto_reply_refusal",
    "build_runtime",
    "load_engine",
    "parse_reinject_daemons",
    "policy_header_value",
    "quarantine_reason",
    "run_milter",
    "serve_front",
    "synthetic_decision",
]
