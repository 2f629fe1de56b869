"""How long `qnprov verify` takes on the lab, against references measured in the same run.

    .venv/bin/qnprov lab up          # the lab must be running
    .venv/bin/python benchmarks/verify_time.py [--json]

Issue 5's goals: verify on one lab host takes <= 60 s without testssl and Lynis,
and <= 5 minutes with them. The tests check that verify is green; the times are
measured here, not asserted in a test.

References (same run, same lab, same machine):

* without scanners: ``ansible -m setup`` against the lab host, the cost of
  Ansible's own first look at a host. Ratio = verify / that.
* with scanners: the slowest single scanner, the floor for a run that starts
  its scanners in parallel. Each scan verify starts is timed alone, one after
  another, so none competes with another for the cores: testssl.sh on every
  TLS endpoint verify scans (the same command line verify builds), and
  ``lynis audit system --quick`` inside the host. The reference is the longest
  of these. Ratio = verify (its scans and its 70 other checks) / that scan;
  1.0 would mean verify costs no more than its slowest scan. (The sum of the
  scans, what an operator running them one after another by hand would wait,
  is not the reference: it is the slowest way to run the same scans.)

Each figure is printed beside its goal with "met" or "not met".

Loopback only: testssl is pointed at the lab's published ports with --ip.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import Goal, print_goals

from qnprov import lab, paths
from qnprov.controls import scanners
from qnprov.controls.target import SERVICES
from qnprov.controls.verify import lab_config_targets

REPO = paths.PROJECT_ROOT
INVENTORY = REPO / "inventories" / "lab"
WAIVERS = REPO / "tests" / "integration" / "lab-waivers.yml"
GOALS = {"without_scanners": 60.0, "with_scanners": 300.0}


def _timed(command: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    return time.monotonic() - started, proc


def verify(*extra: str) -> tuple[float, dict[str, int]]:
    elapsed, proc = _timed([sys.executable, "-m", "qnprov", "verify", "-i", str(INVENTORY), "--json",
                            "--waivers", str(WAIVERS), *extra], cwd=REPO, timeout=900)
    try:
        summary = json.loads(proc.stdout)["summary"]
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"verify printed no report (exit {proc.returncode}): {proc.stderr[-800:]}") from exc
    return elapsed, summary


def ansible_setup() -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    elapsed, proc = _timed([str(Path(sys.executable).with_name("ansible")), "-i", str(INVENTORY), "mail1",
                            "-m", "ansible.builtin.setup"], cwd=REPO, env=env, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"ansible -m setup failed: {proc.stdout[-800:]}{proc.stderr[-800:]}")
    return elapsed


def each_scanner_alone(config: lab.LabConfig) -> dict[str, float]:
    """Seconds of each scan verify runs on the first lab host (same endpoints and command lines), each alone."""
    target = lab_config_targets(config)[0]
    container = config.hosts[0].container
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qnprov-bench-testssl-") as workdir:
        for service in scanners.testssl_services(target.endpoints):
            endpoint = target.endpoint(service)
            command = scanners.testssl_command(endpoint.host, endpoint.port, str(Path(workdir) / f"{service}.json"),
                                               starttls=SERVICES[service][1], ca_file=target.ca_file,
                                               server_name=target.mail_hostname)
            times[f"testssl {service}"], _ = _timed(command, timeout=600)
    elapsed, proc = _timed(["podman", "exec", container, "lynis", "audit", "system", "--quick",
                            "--no-colour"], timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"lynis failed in {container}: {proc.stderr[-400:]}")
    times["lynis"] = elapsed
    return times


def summarise(setup_s: float, without_s: float, without_summary: dict[str, int], scans: dict[str, float],
              with_s: float, with_summary: dict[str, int]) -> tuple[dict[str, Any], list[Goal]]:
    """The figures, each run against its reference, and the goals beside them."""
    slowest = max(scans, key=lambda name: scans[name])
    results = {
        "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 1),
        "without_scanners": {"seconds": round(without_s, 1), "summary": without_summary,
                             "reference": "ansible -m setup", "reference_seconds": round(setup_s, 1),
                             "ratio": round(without_s / setup_s, 2)},
        "with_scanners": {"seconds": round(with_s, 1), "summary": with_summary,
                          "reference": f"the slowest single scan, run alone ({slowest})",
                          "reference_seconds": round(scans[slowest], 1),
                          "each_scan_alone_seconds": {k: round(v, 1) for k, v in scans.items()},
                          "ratio": round(with_s / scans[slowest], 2)},
    }
    goals = [Goal("verify without scanners", round(without_s, 1), GOALS["without_scanners"], "s"),
             Goal("verify with scanners", round(with_s, 1), GOALS["with_scanners"], "s")]
    return results, goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    config = lab.load_lab_config()
    down = [h.container for h in config.hosts if lab.container_state(h.container) != "running"]
    if down:
        raise SystemExit(f"lab container(s) {down} not running: run `qnprov lab up` first")

    setup_s = ansible_setup()
    without_s, without_summary = verify("--no-scanners")
    scans = each_scanner_alone(config)
    with_s, with_summary = verify()
    results, goals = summarise(setup_s, without_s, without_summary, scans, with_s, with_summary)
    if options.json:
        print(json.dumps({**results, "goals": [g.as_dict() for g in goals]}, indent=2))
        return 0
    print(f"cores {results['cores']}, load average {results['load_average']}")
    for label in ("without_scanners", "with_scanners"):
        row = results[label]
        print(f"verify {label.replace('_', ' ')}: {row['seconds']} s; {row['summary']}")
        print(f"  reference ({row['reference']}): {row['reference_seconds']} s; ratio {row['ratio']}")
    print_goals(goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
