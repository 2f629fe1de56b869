"""Converge benchmark: the lab's first converge against the apt floor.

Floor: in a fresh container from the same base image, `apt-get install` of the
same package set the roles install, plus starting the services. That is the
least any deployment of this stack can cost on this machine.

Measured: the first converge of playbooks/site.yml on a fresh container with
the lab inventory (its own container, ports and state, so a running lab is not
touched), reached over SSH as the lab and production are, then a no-change
re-converge and its changed count. Per-task times come from the runner's events
(each task result's duration; a loop counts once), so p50/p99 need no callback.

Prints the ratio first converge / floor. Goals, each printed beside its figure with
"met" or "not met": <= 1.5x; re-converge <= 60 s with 0 changed; per-task p50 and p99
of the re-converge. ``--reconverge-only`` measures a no-change deploy of the running lab.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import Goal, print_goals

from qnprov import lab, paths, runner, testbed

#: Per-task time goals of a no-change re-converge: 60 s over the site's ~250 tasks
#: leaves about 0.25 s a task; p99 allows the few tasks that must run a validator.
P50_GOAL = 0.25
P99_GOAL = 2.0
SERVICES = ["slapd", "postfix", "dovecot", "rspamd", "redis-server", "nftables", "fail2ban"]


def role_packages() -> list[str]:
    """The packages the site roles install: their *_packages defaults, and the
    package list each role's dry-run guard checks (roles/*/vars/main.yml)."""
    packages: list[str] = []
    for role in ("common", "os_hardening", "openldap", "rspamd", "postfix", "dovecot"):
        for rel in ("defaults/main.yml", "vars/main.yml"):
            path = paths.ROLES_DIR / role / rel
            data = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
            for name, value in data.items():
                if name.endswith("_packages") and isinstance(value, list):
                    packages += [str(v) for v in value if "{{" not in str(v)]
    return sorted(set(packages))


def fresh_container(name: str) -> None:
    testbed.remove_container(name)
    subprocess.run(testbed.systemd_run_args(name), check=True, capture_output=True)
    testbed.wait_for_systemd(name)


def floor(packages: list[str], *, name: str = "qnprov-bench-floor") -> float:
    fresh_container(name)
    try:
        started = time.monotonic()
        script = ("set -e; export DEBIAN_FRONTEND=noninteractive; "
                  "echo 'slapd slapd/no_configuration boolean false' | debconf-set-selections; "
                  "echo 'postfix postfix/main_mailer_type select Internet Site' | debconf-set-selections; "
                  "echo 'postfix postfix/mailname string bench.quangninh.test' | debconf-set-selections; "
                  "apt-get update -qq; apt-get install -y -qq " + " ".join(packages) + " >/dev/null; "
                  "systemctl restart " + " ".join(SERVICES) + " || true")
        subprocess.run(["podman", "exec", name, "sh", "-c", script], check=True, capture_output=True, timeout=1800)
        return time.monotonic() - started
    finally:
        testbed.remove_container(name)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def task_profile(result: runner.PlaybookResult, top: int = 10) -> dict[str, Any]:
    """Per-task times of a run (from the runner's events): p50, p99 and the slowest."""
    times = [seconds for _, _, seconds in result.task_seconds]
    slowest = sorted(result.task_seconds, key=lambda row: row[2], reverse=True)[:top]
    return {"tasks": len(times), "p50_seconds": round(percentile(times, 50), 3),
            "p99_seconds": round(percentile(times, 99), 3),
            "slowest": [{"host": h, "task": t, "seconds": round(sec, 2)} for h, t, sec in slowest]}


def bench_inventory(base: lab.LabConfig, directory: Path, *, container: str, port_base: int) -> lab.LabConfig:
    """A copy of the lab inventory on its own container, ports (port_base + container port) and state."""
    inventory = directory / "inventory"
    inventory.mkdir()
    config = lab.with_port_base(base, containers={h.name: container for h in base.hosts}, port_base=port_base,
                                state=directory / "state")
    hosts = yaml.safe_load((base.inventory / "hosts.yml").read_text())
    for host in config.hosts:
        hv = hosts["all"]["hosts"][host.name]
        hv["qnprov_lab_container"] = host.container
        hv["qnprov_lab_publish"] = {k: [hp, cp] for k, (hp, cp) in host.publish.items()}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, allow_unicode=True))
    shutil.copytree(base.inventory / "group_vars", inventory / "group_vars")
    return lab.LabConfig(inventory, config.hosts, base.domain, base.base_dn, base.accounts, directory / "state")


def converge_twice(*, container: str, port_base: int) -> dict[str, Any]:
    """First converge on a fresh container, then a no-change re-converge (both over SSH, as the lab does)."""
    base = lab.load_lab_config()
    if len(base.hosts) != 1:
        raise SystemExit("the converge benchmark measures the all-in-one lab (one host)")
    with tempfile.TemporaryDirectory(prefix="qnprov-bench-") as tmp:
        config = bench_inventory(base, Path(tmp), container=container, port_base=port_base)
        lab.ensure_secrets(config)
        env = {"QNPROV_STATE_DIR": str(config.state)}
        testbed.remove_container(container)
        try:
            started = time.monotonic()
            lab.ensure_container(config.hosts[0], config.state)
            boot_s = time.monotonic() - started
            first = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=config.inventory, envvars=env)
            if first.failed:
                raise SystemExit(f"first converge failed: {first.failures[:3]}")
            second = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=config.inventory, envvars=env)
            if second.failed:
                raise SystemExit(f"re-converge failed: {second.failures[:3]}")
            return {"container_and_ssh_seconds": round(boot_s, 1), "first": first, "second": second}
        finally:
            testbed.remove_container(container)


def reconverge_running_lab() -> runner.PlaybookResult:
    """A no-change deploy of the lab that runs now ($QNPROV_LAB_INVENTORY), as `qnprov deploy` runs it."""
    config = lab.load_lab_config()
    result = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=config.inventory)
    if result.failed:
        raise SystemExit(f"re-converge failed: {result.failures[:3]}")
    return result


def reconverge_goals(second: runner.PlaybookResult) -> tuple[dict[str, Any], list[Goal]]:
    changed = sum(h.changed for h in second.hosts.values())
    profile = task_profile(second)
    figures = {"reconverge_seconds": round(second.seconds, 1), "reconverge_changed": changed,
               "reconverge_changed_tasks": [f"{h}: {t}" for h, t in second.changed_tasks],
               "reconverge_tasks": profile}
    goals = [Goal("no-change re-converge", figures["reconverge_seconds"], 60.0, "s"),
             Goal("re-converge changed tasks", changed, 0),
             Goal("per-task time p50 (re-converge)", profile["p50_seconds"], P50_GOAL, "s"),
             Goal("per-task time p99 (re-converge)", profile["p99_seconds"], P99_GOAL, "s")]
    return figures, goals


def write_task_times(path: Path | None, result: runner.PlaybookResult) -> None:
    """Every task time of a run, slowest first (the profile the summary's top ten come from)."""
    if path is None:
        return
    rows = sorted(result.task_seconds, key=lambda row: row[2], reverse=True)
    path.write_text(json.dumps([{"host": h, "task": t, "seconds": round(sec, 3)} for h, t, sec in rows],
                               indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--floor-only", action="store_true", help="Measure only the apt floor.")
    parser.add_argument("--reconverge-only", action="store_true",
                        help="Only a no-change deploy of the running lab ($QNPROV_LAB_INVENTORY).")
    parser.add_argument("--prefix", default="qnprov-bench", help="Name prefix of the benchmark's containers.")
    parser.add_argument("--port-base", type=int, default=40000,
                        help="The benchmark host publishes container port P on loopback port BASE+P.")
    parser.add_argument("--tasks-json", type=Path, metavar="PATH",
                        help="Also write every task time of the re-converge (slowest first) to PATH.")
    args = parser.parse_args()
    testbed.prepare_host()
    testbed.build_image()
    load = Path("/proc/loadavg").read_text().split()[:3]
    if args.reconverge_only:
        second = reconverge_running_lab()
        write_task_times(args.tasks_json, second)
        figures, goals = reconverge_goals(second)
        print(json.dumps({**figures, "loadavg_before": load, "goals": [g.as_dict() for g in goals]}, indent=2))
        print_goals(goals)
        return 0
    packages = role_packages()
    floor_s = floor(packages, name=f"{args.prefix}-floor")
    if args.floor_only:
        print(json.dumps({"packages": len(packages), "floor_seconds": round(floor_s, 1)}, indent=2))
        return 0
    runs = converge_twice(container=f"{args.prefix}-mail1", port_base=args.port_base)
    first: runner.PlaybookResult = runs["first"]
    write_task_times(args.tasks_json, runs["second"])
    figures, reconverge = reconverge_goals(runs["second"])
    result = {
        "packages": len(packages),
        "floor_seconds": round(floor_s, 1),
        "container_and_ssh_seconds": runs["container_and_ssh_seconds"],
        "first_converge_seconds": round(first.seconds, 1),
        "ratio_first_converge_to_floor": round(first.seconds / floor_s, 2),
        "first_converge_tasks": task_profile(first),
        **figures,
        "loadavg_before": load,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
    }
    goals = [Goal("first converge / apt floor", result["ratio_first_converge_to_floor"], 1.5, "x"), *reconverge]
    print(json.dumps({**result, "goals": [g.as_dict() for g in goals]}, indent=2))
    print_goals(goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
