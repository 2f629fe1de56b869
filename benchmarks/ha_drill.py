"""Benchmark: issue 10's figures on the multi-host lab (lab-ha), which must be running.

- The failure drills (``qnprov lab drill``, :mod:`qnprov.labdrill`): for every drill,
  accepted = delivered, 0 duplicates, 0 bounces, 0 lost; the time from a store's stop
  until an IMAP login of one of its accounts succeeds again through the other host,
  ``qnprov store failover`` included (goal <= 60 s, the issue's).
- LDAP replication lag: a modify of one attribute as the directory admin on provider 1
  (ha1's published ldaps port), then provider 2 polled without pause until a search
  returns the new value; clock from the write's acknowledgement (p50/p99, goal p99 <= 2 s:
  the password drill's bound).
- dsync replication lag for new mail: a message submitted to an account homed on
  store 1; clock from the moment ``doveadm search`` on store 1 first finds it until it
  first finds it on store 2 (both polled through ``podman exec``, about 0.1-0.3 s a
  round here, which bounds the resolution; p50/p99, goal p99 <= 10 s).
- ``lab up -i lab-ha`` converge against the single host's first converge, as a ratio
  (``--ha-converge`` defaults to the ``timings.converge`` of ``$QNPROV_STATE_DIR/lab.json``,
  the last ``lab up``, when that was a first converge; ``--single-converge`` is the all-in-one lab's first converge in
  seconds, from its own ``lab up``). Goal <= 2: the two hosts converge in parallel.

Usage: QNPROV_STATE_DIR=... .venv/bin/python benchmarks/ha_drill.py [-i lab-ha] [--samples 20]
       [--drill NAME ...] [--single-converge S] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import Goal, print_goals
from ldap3 import BASE, MODIFY_DELETE, MODIFY_REPLACE

from qnprov import lab, labdrill, paths
from qnprov.labclient import Lab

POLL_TIMEOUT = 60.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ldap_lag(client: Lab, samples: int) -> list[float]:
    """Seconds from a modify's acknowledgement on provider 1 until provider 2 returns the value."""
    p1, p2 = client.config.hosts[0], client.config.hosts[1]
    dn = client.dn_of(client.config.accounts[0].address)
    writer, reader = client.admin(p1), client.admin(p2)
    writer.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["description"])
    original = [str(v) for v in writer.entries[0]["description"].values]
    lags = []
    try:
        for i in range(samples):
            value = f"ha_drill lag {uuid.uuid4().hex[:8]} #{i}"
            writer.modify(dn, {"description": [(MODIFY_REPLACE, [value])]})
            acknowledged = time.monotonic()
            while time.monotonic() - acknowledged < POLL_TIMEOUT:
                reader.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["description"])
                if [str(v) for v in reader.entries[0]["description"].values] == [value]:
                    lags.append(time.monotonic() - acknowledged)
                    break
            else:
                raise SystemExit(f"provider 2 did not see write #{i} within {POLL_TIMEOUT:.0f}s")
    finally:
        writer.modify(dn, {"description": [(MODIFY_REPLACE, original) if original else (MODIFY_DELETE, [])]})
        writer.unbind()
        reader.unbind()
    return lags


def _found(client: Lab, host: lab.LabHost, user: str, message_id: str) -> bool:
    proc = client.exec(host, "doveadm", "search", "-u", user, "mailbox", "INBOX", "header", "message-id", message_id,
                       timeout=30)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def dsync_lag(client: Lab, samples: int) -> list[float]:
    """Seconds from a new message's arrival on store 1 until store 2 holds it too."""
    store1, store2 = client.config.hosts[0], client.config.hosts[1]
    user = client.homed_on(store1)[0]
    sender = next(a.address for a in client.config.accounts if a.address != user)
    smtp = client.smtp(store1, sender, client.password(sender))
    lags = []
    try:
        for i in range(samples):
            message_id = f"ha-drill-dsync-{uuid.uuid4().hex}@{client.config.domain}"
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = sender, user, f"ha_drill dsync #{i}"
            msg["Message-ID"] = f"<{message_id}>"
            msg.set_content("dsync lag sample\n")
            smtp.send_message(msg)
            began = time.monotonic()
            arrived = replicated = None
            while time.monotonic() - began < POLL_TIMEOUT and replicated is None:
                if arrived is None and _found(client, store1, user, message_id):
                    arrived = time.monotonic()
                if arrived is not None and _found(client, store2, user, message_id):
                    replicated = time.monotonic()
            if arrived is None or replicated is None:
                raise SystemExit(f"dsync sample #{i} not on both stores within {POLL_TIMEOUT:.0f}s")
            lags.append(replicated - arrived)
    finally:
        smtp.quit()
    return lags


def summarise(drills: list[labdrill.DrillResult], ldap: list[float], dsync: list[float],
              ha_converge: float | None, single_converge: float | None) -> tuple[dict[str, Any], list[Goal]]:
    """The figures and their goals (pure: tests/unit/test_labdrill.py)."""
    goals = []
    for drill in drills:
        goals.append(Goal(f"{drill.name}: passed", float(drill.passed), 1.0, at_most=False))
        if drill.sent:
            goals.append(Goal(f"{drill.name}: accepted - delivered", float(drill.accepted - drill.delivered), 0.0))
            goals.append(Goal(f"{drill.name}: duplicates + bounces + lost",
                              float(drill.duplicates + drill.bounced + drill.lost), 0.0))
        login = drill.timings.get("login_restored_seconds")
        if drill.name == "store-down":
            goals.append(Goal("store stop to login through failover", round(login, 2) if login is not None
                              else float("inf"), labdrill.LOGIN_GOAL_SECONDS, "s"))
    figures: dict[str, Any] = {"drills": [d.as_dict() for d in drills]}
    for name, lags, goal in (("ldap replication lag", ldap, 2.0), ("dsync replication lag", dsync, 10.0)):
        if lags:
            p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
            figures[name] = {"samples": len(lags), "p50_seconds": round(p50, 3), "p99_seconds": round(p99, 3),
                             "mean_seconds": round(statistics.fmean(lags), 3)}
            goals.append(Goal(f"{name} p99", round(p99, 3), goal, "s"))
    if ha_converge and single_converge:
        figures["converge"] = {"lab_ha_seconds": ha_converge, "single_seconds": single_converge}
        goals.append(Goal("lab-ha converge / single-host first converge", round(ha_converge / single_converge, 2), 2.0))
    return figures, goals


def first_converge_seconds(status: dict[str, Any]) -> float | None:
    """The converge time of the last ``lab up`` if it was a first converge (every container new);
    a re-converge is not comparable with the single host's first converge."""
    if status.get("first_converge") is not True:
        return None
    converge = status.get("timings", {}).get("converge")
    return float(converge) if converge is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-i", "--inventory", default="lab-ha")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--drill", action="append", choices=labdrill.DRILLS)
    parser.add_argument("--single-converge", type=float)
    parser.add_argument("--ha-converge", type=float)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = lab.load_lab_config(paths.resolve_inventory(args.inventory))
    client = Lab(config)
    ldap, dsync = ldap_lag(client, args.samples), dsync_lag(client, args.samples)
    drills = labdrill.run(config, args.drill or list(labdrill.DRILLS))
    ha_converge = args.ha_converge
    status = config.state / "lab.json"
    if ha_converge is None and status.is_file():
        ha_converge = first_converge_seconds(json.loads(status.read_text()))
    figures, goals = summarise(drills, ldap, dsync, ha_converge, args.single_converge)
    if args.json:
        print(json.dumps({**figures, "goals": [g.as_dict() for g in goals]}, indent=2, ensure_ascii=False))
    else:
        for drill in drills:
            print(f"{drill.name}: sent {drill.sent} accepted {drill.accepted} delivered {drill.delivered} "
                  f"duplicates {drill.duplicates} bounced {drill.bounced} lost {drill.lost} "
                  f"timings {json.dumps(drill.as_dict()['timings'])}"
                  + (f" error {drill.error}" if drill.error else ""))
        for name in ("ldap replication lag", "dsync replication lag", "converge"):
            if name in figures:
                print(f"{name}: {json.dumps(figures[name])}")
        if "converge" not in figures:
            print("converge ratio: not measured (give --single-converge, and --ha-converge or a lab.json from a "
                  "first converge)")
        print_goals(goals)
    return 0 if all(goal.met for goal in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
