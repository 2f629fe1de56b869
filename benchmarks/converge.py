"""Converge benchmark: the lab's first converge against the apt floor.

Floor: in a fresh container from the same base image, `apt-get install` of the
same package set the roles install, plus starting the services. That is the
least any deployment of this stack can cost on this machine.

Measured: the first converge of playbooks/site.yml on a fresh container with
the lab inventory (its own container, ports and state, so a running lab is not
touched), then an idempotent re-converge and its changed count.

Prints the ratio first converge / floor. Goals, each printed beside its figure with
"met" or "not met": <= 1.5x; re-converge <= 60 s with 0 changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import Goal, print_goals

from qnprov import lab, paths, runner, testbed

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


def floor(packages: list[str]) -> float:
    name = "qnprov-bench-floor"
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


def converge_twice() -> tuple[float, float, int]:
    base = lab.load_lab_config()
    with tempfile.TemporaryDirectory(prefix="qnprov-bench-") as tmp:
        tmpdir = Path(tmp)
        container = "qnprov-bench-mail1"
        inventory = tmpdir / "inventory"
        inventory.mkdir()
        hosts = yaml.safe_load((base.inventory / "hosts.yml").read_text())
        hosts["all"]["hosts"]["mail1"]["ansible_host"] = container
        hosts["all"]["hosts"]["mail1"]["qnprov_lab_container"] = container
        (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, allow_unicode=True))
        shutil.copytree(base.inventory / "group_vars", inventory / "group_vars")
        state = tmpdir / "state"
        config = lab.LabConfig(inventory, base.hosts, base.domain, base.base_dn, base.accounts, state)
        lab.ensure_secrets(config)
        fresh_container(container)
        env = {"QNPROV_STATE_DIR": str(state)}
        try:
            first = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=inventory, envvars=env)
            if first.failed:
                raise SystemExit(f"first converge failed: {first.failures[:3]}")
            second = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=inventory, envvars=env)
            if second.failed:
                raise SystemExit(f"re-converge failed: {second.failures[:3]}")
            changed = sum(h.changed for h in second.hosts.values())
            return first.seconds, second.seconds, changed
        finally:
            testbed.remove_container(container)


def main() -> int:
    testbed.prepare_host()
    testbed.build_image()
    packages = role_packages()
    floor_s = floor(packages)
    if "--floor-only" in sys.argv:
        print(json.dumps({"packages": len(packages), "floor_seconds": round(floor_s, 1)}, indent=2))
        return 0
    first_s, again_s, changed = converge_twice()
    result = {
        "packages": len(packages),
        "floor_seconds": round(floor_s, 1),
        "first_converge_seconds": round(first_s, 1),
        "ratio_first_converge_to_floor": round(first_s / floor_s, 2),
        "reconverge_seconds": round(again_s, 1),
        "reconverge_changed": changed,
    }
    goals = [Goal("first converge / apt floor", result["ratio_first_converge_to_floor"], 1.5, "x"),
             Goal("re-converge", result["reconverge_seconds"], 60.0, "s"),
             Goal("re-converge changed tasks", changed, 0)]
    print(json.dumps({**result, "goals": [g.as_dict() for g in goals]}, indent=2))
    print_goals(goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
