"""Throughput and added latency of the policy milter behind a real Postfix.

    .venv/bin/python benchmarks/milter_throughput.py [--messages 1500] [--concurrency 20] [--workers 2] [--json]

Same mixed corpus twice through a private Postfix on loopback (qnprov_testing.postfix):
``smtp-source`` → Postfix (+/- ``qnprov milter`` on a unix socket) → ``smtp-sink``.
Reports the throughput ratio (with/without milter), msg/s per core, p50/p99 added latency
(end-of-DATA reply time measured by a Python client, one message per transaction on a
kept-open connection, so TCP connection set-up is not counted), and the peak RSS of the
whole milter process tree (supervisor, front, evaluators) while a hostile corpus goes
through. Needs root and the host's postfix binaries. Loopback only.

Goals (issue 4), each printed beside its figure with "met" or "not met": throughput
ratio >= 0.8; >= 300 messages per milter CPU-second (per core); added p99 latency
<= 50 ms for messages up to 1 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "policy"))  # the corpora the tests build

sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))  # qnprov_testing, from the source tree
import milter_corpus as corpus  # noqa: E402
import policy_corpus as hostile  # noqa: E402
from goals import Goal, print_goals  # noqa: E402

from qnprov_testing.postfix import SMTP_SOURCE, postfix_with_milter  # noqa: E402


def mixed_corpus() -> dict[str, bytes]:
    """Accepted kinds only (smtp-source stops on a 5xx): clean, tagged, attachments up to ~1 MB."""
    big_text = corpus.large_text(lines=600)  # ~1 MB of body text
    return {
        "clean": corpus.clean_internal(),
        "registration": corpus.registration(),
        "lookalike-docx": corpus.lookalike_docx(),
        "pdf": hostile.message(attachments=[("ke-hoach.pdf", "application/pdf",
                                             hostile.pdf(["Kế hoạch công tác năm 2026", "Trân trọng./."] * 40))],
                               sender=corpus.OFFICIAL, to=corpus.COLLEAGUE),
        "1mb-text": big_text,
    }


def hostile_corpus() -> dict[str, bytes]:
    return {
        "zip-bomb-1g": hostile.message(attachments=[("bomb.zip", "application/zip", hostile.zip_bomb(1024))],
                                       sender=corpus.OFFICIAL, to=corpus.COLLEAGUE),
        "nested-20": hostile.message(attachments=[("n.zip", "application/zip",
                                                   hostile.nested_zip("a.txt", b"MAT", 20))],
                                     sender=corpus.OFFICIAL, to=corpus.COLLEAGUE),
        "10k-parts": corpus.many_parts(10_000),
        "encrypted-pdf": hostile.message(attachments=[("e.pdf", "application/pdf", hostile.pdf(["x"], encrypt=True))],
                                         sender=corpus.OFFICIAL, to=corpus.COLLEAGUE),
        "malformed": b"From: a@quangninh.test\r\nContent-Type: multipart/mixed; boundary=\"zz\r\n\r\n--zz\r\n"
                     + b"Content-Type: text/plain\r\n\r\n" + b"\xff\xfe" * 5000 + b"\r\n--zz",
    }


def smtp_source_run(port: int, files: dict[str, Path], total: int, concurrency: int) -> float:
    """Wall seconds for ``total`` messages, the kinds in parallel, until every smtp-source is done."""
    per_kind = max(1, total // len(files))
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [SMTP_SOURCE, "-s", str(max(1, concurrency // len(files))), "-m", str(per_kind), "-f",
             corpus.OFFICIAL, "-t", corpus.COLLEAGUE, "-F", str(path), f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for path in files.values()
    ]
    for process in processes:
        _, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise RuntimeError(f"smtp-source failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def latencies(port: int, messages: list[bytes], rounds: int) -> list[float]:
    """Seconds per SMTP transaction (MAIL..end of DATA reply) on one kept-open connection."""
    samples: list[float] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        for _ in range(rounds):
            for message in messages:
                started = time.perf_counter()
                client.sendmail(corpus.OFFICIAL, [corpus.COLLEAGUE], message)
                samples.append(time.perf_counter() - started)
    return samples


def tree_cpu_seconds(root: int) -> float:
    """utime+stime (including reaped children) of a process and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = sum(int(v) for v in fields[11:15]) / ticks
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(p for p, parent in parents.items() if parent == pid)
    return total


def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over a process and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry), int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def _last_verdict(audit_path: Path) -> str:
    last = json.loads(audit_path.read_text(encoding="utf-8").splitlines()[-1])
    return f"{last['verdict']}:{last['rule']}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(messages: int, concurrency: int, workers: int, rounds: int, *, small: bool = False,
        audit_fsync: str = "always") -> dict[str, object]:
    mix = mixed_corpus()
    if small:  # the everyday case: short mails and small attachments, no 1 MB bodies
        mix = {k: v for k, v in mix.items() if k != "1mb-text"}
    workdir_files: dict[str, Path] = {}
    results: dict[str, object] = {"messages": messages, "concurrency": concurrency, "workers": workers,
                                  "corpus": "small" if small else "mixed", "audit_fsync": audit_fsync,
                                  "cores": os.cpu_count(), "corpus_bytes": {k: len(v) for k, v in mix.items()}}
    overrides_dir = Path("/tmp/qnprov-bench-policy")
    overrides = corpus.write_overrides(overrides_dir)
    latency_set = list(mix.values())
    for label, with_milter in (("without", False), ("with", True)):
        audit_path = overrides_dir / f"audit-{time.monotonic_ns()}.jsonl"
        args = ["--workers", str(workers), "--overrides", str(overrides), "--audit-log",
                str(audit_path), "--timeout", "30",
                "--audit-fsync", audit_fsync]
        with postfix_with_milter(milter_args=args, with_milter=with_milter, dump=False) as (postfix, _sink, milter):
            for kind, data in mix.items():
                path = postfix.workdir / f"{kind}.eml"
                # smtp-source -F wants LF line ends; it sends CRLF itself.
                path.write_bytes(data.replace(b"\r\n", b"\n"))
                workdir_files[kind] = path
            smtp_source_run(postfix.smtp_port, workdir_files, max(50, messages // 10), concurrency)  # warm-up
            cpu_before = tree_cpu_seconds(milter.pid) if milter is not None else 0.0
            seconds = smtp_source_run(postfix.smtp_port, workdir_files, messages, concurrency)
            sent = (messages // len(workdir_files)) * len(workdir_files)
            if milter is not None:
                milter_cpu = tree_cpu_seconds(milter.pid) - cpu_before
                results["milter_cpu_ms_per_msg"] = round(milter_cpu / sent * 1000, 3)
                results["milter_msg_per_s_per_core"] = round(sent / milter_cpu, 1) if milter_cpu else None
            samples = latencies(postfix.smtp_port, latency_set, rounds)
            results[label] = {"seconds": round(seconds, 3), "msg_per_s": round(sent / seconds, 1),
                              "latency_p50_ms": round(percentile(samples, 50) * 1000, 2),
                              "latency_p99_ms": round(percentile(samples, 99) * 1000, 2)}
            if with_milter and milter is not None:
                peak = tree_rss_kib(milter.pid)
                stop = threading.Event()

                def sample(stop: threading.Event = stop) -> None:
                    nonlocal peak
                    while not stop.is_set():
                        peak = max(peak, tree_rss_kib(milter.pid))
                        time.sleep(0.02)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                verdicts: dict[str, str] = {}
                for kind, data in hostile_corpus().items():
                    started = time.perf_counter()
                    try:
                        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=120) as client:
                            client.sendmail(corpus.OFFICIAL, [corpus.COLLEAGUE], data)
                        outcome = "250 queued"
                    except smtplib.SMTPResponseException as exc:
                        error = exc.smtp_error
                        text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
                        outcome = f"{exc.smtp_code} {text[:60]}"
                    elapsed = time.perf_counter() - started
                    verdict = _last_verdict(audit_path) if outcome.startswith("250") else "reject/tempfail"
                    verdicts[kind] = f"{outcome}, verdict {verdict} ({elapsed:.2f}s)"
                stop.set()
                sampler.join()
                results["hostile"] = {"peak_rss_mib": round(peak / 1024, 1), "outcomes": verdicts}
    with_, without = results["with"], results["without"]
    assert isinstance(with_, dict) and isinstance(without, dict)
    results["throughput_ratio"] = round(with_["msg_per_s"] / without["msg_per_s"], 3)
    results["msg_per_s_per_core_with_milter"] = round(with_["msg_per_s"] / (os.cpu_count() or 1), 1)
    results["added_latency_p50_ms"] = round(with_["latency_p50_ms"] - without["latency_p50_ms"], 2)
    results["added_latency_p99_ms"] = round(with_["latency_p99_ms"] - without["latency_p99_ms"], 2)
    return results


def goals_of(results: dict[str, object]) -> list[Goal]:
    per_cpu = results.get("milter_msg_per_s_per_core")
    return [Goal("throughput with milter / without", float(results["throughput_ratio"]), 0.8,  # type: ignore[arg-type]
                 at_most=False),
            Goal("messages per milter CPU-second", float(per_cpu or 0.0), 300.0, at_most=False),  # type: ignore[arg-type]
            Goal("added p99 latency", float(results["added_latency_p99_ms"]), 50.0, "ms")]  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--latency-rounds", type=int, default=40)
    parser.add_argument("--small", action="store_true", help="leave out the 1 MB messages")
    parser.add_argument("--audit-fsync", choices=["always", "never"], default="always")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    results = run(options.messages, options.concurrency, options.workers, options.latency_rounds,
                  small=options.small, audit_fsync=options.audit_fsync)
    goals = goals_of(results)
    if options.json:
        print(json.dumps({**results, "goals": [g.as_dict() for g in goals]}, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
        print_goals(goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
