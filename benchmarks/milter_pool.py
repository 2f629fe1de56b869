"""What the evaluator pool's shared message buffer saves (qnprov/policy/milter/pool.py).

The pool hands each message to its evaluator process through a memory file shared with
it (``MessageBuffer``) instead of pickling it through the pipe, to save CPU on large mail.
(The pool also used to raise glibc's trim and mmap thresholds, ``tune_malloc``; this
benchmark showed no gain from it, 1.00-1.03x on 1 MB mail, so it was removed and the
milter runs glibc's defaults: docs/milter.md.) This drives ``ProcessPoolEvaluator`` directly (no Postfix) with
the messages of benchmarks/milter_throughput.py's mixed corpus, one kind at a time and then
all kinds in turns (a 1 MB message between small ones), in
two configurations, each in a fresh Python process:

* ``default``: what the milter runs (the shared buffer);
* ``pipe``: ``shared_buffer=False``, the message pickled through the pipe.

As in the milter, each message reaches the pool as freshly allocated 64 KiB body pieces
(libmilter's chunks), from a thread other than the main one (libmilter's threads use
their own malloc arenas). One evaluator, messages one after another. The figure is CPU time
per message of the front (this process) plus the evaluator (``/proc/<pid>/task/*/schedstat``),
median over ``--repeats`` runs of each configuration, run in turns; beside it the front's
share, and the minor page faults per message of both (what the buffer was meant to cut).

Goal (issue 16), on the ~1 MB message, where it was meant to pay: CPU per message
through the pipe / with the shared buffer >= 1.1 (it saves at least 10%).

    .venv/bin/python benchmarks/milter_pool.py [--messages 200] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "policy"))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import milter_corpus as corpus  # noqa: E402
from goals import Goal, print_goals  # noqa: E402
from milter_throughput import mixed_corpus  # noqa: E402

from qnprov.policy.engine import Envelope  # noqa: E402
from qnprov.policy.milter.pool import ProcessPoolEvaluator  # noqa: E402

VARIANTS = ("default", "pipe")
GOAL_RATIO = 1.1
CHUNK = 65535


def process_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in nanosecond resolution (schedstat), where
    /proc/<pid>/stat counts clock ticks of 10 ms, too coarse for a few ms per message."""
    return sum(int((task / "schedstat").read_text().split()[0])
               for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (field 10 of /proc/<pid>/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def pieces(message: bytes) -> list[bytes]:
    """The message as the front holds it: headers, then body chunks, each a new bytes object."""
    head, _, body = message.partition(b"\r\n\r\n")
    return [head + b"\r\n", b"\r\n", *(body[i:i + CHUNK] for i in range(0, len(body), CHUNK))]


def measure(variant: str, messages: int) -> dict[str, float]:
    """CPU ms per message, per kind, of one configuration (run in its own process)."""
    with tempfile.TemporaryDirectory(prefix="qnprov-bench-pool-") as directory:
        overrides = corpus.write_overrides(Path(directory))
        pool = ProcessPoolEvaluator(1, None, overrides, timeout=120, shared_buffer=variant != "pipe")
        try:
            (pid,) = pool.worker_pids()
            envelope = Envelope(corpus.OFFICIAL, (corpus.COLLEAGUE,), authenticated_user=corpus.OFFICIAL)
            results: dict[str, float] = {}
            messages_of = {kind: [message] for kind, message in mixed_corpus().items()}
            messages_of["mixed, in turns"] = [message for (message,) in messages_of.values()]
            for kind, sent in messages_of.items():
                # In the milter, messages arrive in libmilter's threads (malloc arenas other than
                # the main one); here too, one thread per kind, like one SMTP connection.
                thread = threading.Thread(target=_send, args=(pool, pid, sent, envelope, messages, kind, results))
                thread.start()
                thread.join()
            return results
        finally:
            pool.close()


def _send(pool: ProcessPoolEvaluator, pid: int, kinds: list[bytes], envelope: Envelope, messages: int, kind: str,
          results: dict[str, float]) -> None:
    for message in kinds * 3:  # warm-up: caches, the buffer's first growth
        pool.evaluate(pieces(message), envelope)
    front, worker = time.process_time(), process_cpu_seconds(pid)
    faults = minor_faults(os.getpid()) + minor_faults(pid)
    for number in range(messages):
        pool.evaluate(pieces(kinds[number % len(kinds)]), envelope)
    front, worker = time.process_time() - front, process_cpu_seconds(pid) - worker
    faults = minor_faults(os.getpid()) + minor_faults(pid) - faults
    results[kind] = (front + worker) / messages * 1000
    results[f"{kind} (front)"] = front / messages * 1000
    results[f"{kind} (page faults)"] = faults / messages


def run(messages: int, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--messages", str(messages)],
                                 check=True, capture_output=True, text=True).stdout
            runs[variant].append(json.loads(out))
    kinds = list(runs["default"][0])
    per_message = {variant: {kind: round(statistics.median(run[kind] for run in runs[variant]), 3) for kind in kinds}
                   for variant in VARIANTS}
    ratios: dict[str, dict[str, float | None]] = {
        variant: {kind: (round(per_message[variant][kind] / per_message["default"][kind], 3)
                         if per_message["default"][kind] else None) for kind in kinds}
        for variant in VARIANTS if variant != "default"}
    goals = [Goal("1mb-text: CPU per message through the pipe / shared buffer", ratios["pipe"]["1mb-text"] or 0.0,
                  GOAL_RATIO, at_most=False)]
    return {"messages_per_kind": messages, "repeats": repeats, "per_message": per_message,
            "ratio_to_default": ratios, "goals": goals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200, help="messages of each kind per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.messages)))
        return 0
    result = run(args.messages, args.repeats)
    goals: list[Goal] = result["goals"]
    if args.json:
        print(json.dumps({**result, "goals": [goal.as_dict() for goal in goals]}, indent=2))
    else:
        print(f"Per message, median of {args.repeats} runs of {args.messages}: CPU ms of front + evaluator, "
              "of the front alone, and minor page faults of both:")
        for kind in result["per_message"]["default"]:
            cells = ", ".join(f"{variant} {result['per_message'][variant][kind]}" for variant in VARIANTS)
            ratio = ", ".join(f"{variant}/default {result['ratio_to_default'][variant][kind]}"
                              for variant in VARIANTS[1:])
            print(f"  {kind}: {cells} ({ratio})")
        print_goals(goals)
    return 0 if all(goal.met for goal in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
