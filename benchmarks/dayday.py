"""Day-2 benchmark: ``qnprov push policy`` against the Ansible runs it replaces, on the running lab.

One run of each, end to end as an operator types them (process start included), each
through the project's own command with ``--json`` so its answer is checked, not assumed:

* ``push policy`` of a changed site override (a copy of the lab inventory with one more
  ``group_vars/all`` file), against ``qnprov deploy --tags qnprov_milter-policy`` of
  another changed override (the role's policy tasks alone, the nearest Ansible run);
* a no-change ``push policy`` against a no-change full ``qnprov deploy`` (0 changed);
* ``push block``: from the command to the first message the lab's Postfix rejects
  (authenticated submission, retried every 0.2 s), then ``push unblock``.

The lab's own policy is pushed back before the no-change runs, so the lab ends as it
began. Printed as ratios from this one run, each goal beside its figure with "met" or
"not met". Needs the lab up (``qnprov lab up``; ``QNPROV_LAB_INVENTORY`` picks a copy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import Goal, print_goals

from qnprov import lab, paths

#: "A few seconds, not minutes" (issue 12): a changed policy on every MTA.
PUSH_GOAL = 10.0
#: A push must beat the narrowest Ansible run that does the same by this factor ...
TAGS_RATIO_GOAL = 3.0
#: ... and a no-change full deploy, the check an operator would otherwise run, by this one.
FULL_RATIO_GOAL = 10.0
#: From `push block` to the first rejected message.
BLOCK_GOAL = 10.0
OVERRIDE = ("---\nqnprov_milter_overrides:\n"
            "  local_domains: \"{{{{ qnprov_hosted_domains | default([qnprov_domain]) }}}}\"\n"
            "  failure_verdict: {verdict}\n")


def qnprov(*argv: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qnprov", *argv, "--json"], capture_output=True, text=True,
                          cwd=paths.PROJECT_ROOT, check=False, timeout=3600)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"qnprov {' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return seconds, json.loads(proc.stdout)


def variant(base: Path, workdir: Path, verdict: str) -> Path:
    copy = workdir / f"inventory-{verdict}"
    shutil.copytree(base, copy)
    (copy / "group_vars" / "all" / "zz_dayday.yml").write_text(OVERRIDE.format(verdict=verdict), encoding="utf-8")
    return copy


def push_status(doc: dict[str, Any], expected: str) -> None:
    statuses = {host: data["status"] for host, data in doc["hosts"].items()}
    if set(statuses.values()) != {expected}:
        sys.exit(f"push {doc['command']}: expected every host {expected}, got {statuses}")


def submit(env: dict[str, str]) -> int:
    """One authenticated message from the lab's first account; the SMTP code of the answer."""
    account, other = json.loads(env["QNPROV_TEST_ACCOUNTS"])[:2]
    host, _, port = json.loads(env["QNPROV_TEST_ENDPOINTS"])["submission"].rpartition(":")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = account["address"], other["address"], "dayday benchmark"
    message.set_content("benchmark\n")
    try:
        with smtplib.SMTP(host or "127.0.0.1", int(port), timeout=30) as client:
            client.starttls(context=ssl.create_default_context(cafile=env["QNPROV_TEST_CA"]))
            client.login(account["address"], account["password"])
            client.send_message(message)
        return 250
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code


def block_to_reject(inventory: Path, env: dict[str, str]) -> float:
    sender = json.loads(env["QNPROV_TEST_ACCOUNTS"])[0]["address"]
    started = time.monotonic()
    qnprov("push", "block", "-i", str(inventory), sender, "--reason", "dayday benchmark", "--expires", "10m")
    deadline = started + 120
    while submit(env) != 550:
        if time.monotonic() > deadline:
            sys.exit("no rejection within 120 s of push block")
        time.sleep(0.2)
    seconds = time.monotonic() - started
    qnprov("push", "unblock", "-i", str(inventory), sender)
    if submit(env) != 250:
        sys.exit("the message is still refused after push unblock")
    return seconds


def run(inventory: Path) -> dict[str, Any]:
    env = lab.test_environment(lab.load_lab_config(inventory))
    with tempfile.TemporaryDirectory(prefix="qnprov-dayday-") as tmp:
        changed_a, changed_b = variant(inventory, Path(tmp), "tempfail"), variant(inventory, Path(tmp), "quarantine")
        push_seconds, doc = qnprov("push", "policy", "-i", str(changed_a))
        push_status(doc, "changed")
        tags_seconds, deploy = qnprov("deploy", "-i", str(changed_b), "--tags", "qnprov_milter-policy")
        if not deploy["changed_tasks"]:
            sys.exit("deploy --tags qnprov_milter-policy changed nothing: the override did not reach the host")
    _, doc = qnprov("push", "policy", "-i", str(inventory))  # back to the lab's own policy
    push_status(doc, "changed")
    nochange_push_seconds, doc = qnprov("push", "policy", "-i", str(inventory))
    push_status(doc, "unchanged")
    full_seconds, deploy = qnprov("deploy", "-i", str(inventory))
    if deploy["changed_tasks"]:
        sys.exit(f"the no-change full deploy changed: {deploy['changed_tasks']}")
    block_seconds = block_to_reject(inventory, env)
    result = {
        "push_policy_changed_s": round(push_seconds, 2),
        "deploy_tags_policy_changed_s": round(tags_seconds, 2),
        "push_policy_unchanged_s": round(nochange_push_seconds, 2),
        "deploy_full_unchanged_s": round(full_seconds, 2),
        "push_block_to_first_reject_s": round(block_seconds, 2),
        "ratio_tags_deploy_to_push": round(tags_seconds / push_seconds, 1),
        "ratio_full_nochange_deploy_to_push": round(full_seconds / push_seconds, 1),
        "ratio_full_nochange_deploy_to_nochange_push": round(full_seconds / nochange_push_seconds, 1),
    }
    result["goals"] = [
        Goal("push policy (changed override)", result["push_policy_changed_s"], PUSH_GOAL, "s"),
        Goal("deploy --tags qnprov_milter-policy / push policy", result["ratio_tags_deploy_to_push"],
             TAGS_RATIO_GOAL, "x", at_most=False),
        Goal("no-change full deploy / push policy", result["ratio_full_nochange_deploy_to_push"],
             FULL_RATIO_GOAL, "x", at_most=False),
        Goal("push block to first rejected message", result["push_block_to_first_reject_s"], BLOCK_GOAL, "s"),
    ]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-i", "--inventory", type=Path, default=None, help="lab inventory (default: the lab's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.inventory or lab.default_inventory())
    goals = result.pop("goals")
    if args.json:
        print(json.dumps({**result, "goals": [g.as_dict() for g in goals]}, indent=2))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
        print_goals(goals)
    return 0 if all(g.met for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
