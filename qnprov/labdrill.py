"""``qnprov lab drill``: failure drills on the multi-host lab (issue 10), measured from outside.

Every drill talks to the lab as clients and operators do (:mod:`qnprov.labclient`): the
published loopback ports with only the lab CA trusted, ``podman stop/start`` of one host
at a time, ``qnprov store failover/failback`` as a subprocess, and ``doveadm`` / ``nft``
/ ``postqueue`` through ``podman exec``. Bounces are messages in the sender's INBOX that
carry the run's token (DSNs quote the original headers).

- ``password-replication``: a password modify as the user on provider 1; SMTP AUTH and
  an IMAP login with it on host 2 (which prefers provider 2) within 2 s.
- ``mta-down``: a bounded stream of submissions across both MTAs while host 2 is
  stopped for its middle third; once the queues are empty, ``qnprov store dedupe`` on
  host 2 (a store too, stopped mid-delivery); every accepted message delivered exactly
  once.
- ``store-down``: host 1 (its store) stopped mid-stream, ``qnprov store failover``, an
  IMAP login through host 2 within 60 s; host 1 started, ``qnprov store failback``
  once resynced, ``qnprov store dedupe`` once the queues are empty (the runbook's last
  step), both stores holding the same message GUIDs per mailbox.
- ``split-brain``: provider 1 cut off provider 2 (nft in host 1), conflicting writes
  on each, reconnected: both converge, and the drill reports which write won.

Every drill leaves both hosts running (a stopped one is started again) and the demo
accounts as they were (password, attribute restored).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from ldap3 import MODIFY_DELETE, MODIFY_REPLACE
from ldap3.core.exceptions import LDAPException

from qnprov.errors import ConfigError, QnprovError
from qnprov.lab import LabConfig, LabHost, container_state, podman
from qnprov.labclient import MAIL_ERRORS, DrillResult, Lab, parse_guids, probe_until
from qnprov.labstream import Stream

DRILLS = ("password-replication", "mta-down", "store-down", "split-brain")
PASSWORD_GOAL_SECONDS = 2.0
LOGIN_GOAL_SECONDS = 60.0


def drill_password(lab: Lab) -> DrillResult:
    """A password modify (as the user) on provider 1; logins with it on host 2, which prefers provider 2."""
    result = DrillResult("password-replication")
    p1, p2 = lab.config.hosts[0], lab.config.hosts[1]
    address = (lab.homed_on(p2) or [lab.config.accounts[-1].address])[0]
    old, new = lab.password(address), secrets.token_urlsafe(18)
    dn = lab.dn_cache.setdefault(address, lab.dn_of(address))
    user = lab.ldap(p1, dn, old)
    user.extend.standard.modify_password(dn, old, new)
    changed = time.monotonic()
    user.unbind()
    try:
        found: dict[str, float | None] = {}

        def measure(kind: str) -> None:
            found[kind] = probe_until(lambda: lab.login_ok(kind, p2, address, new), changed, 30)

        threads = [threading.Thread(target=measure, args=(kind,)) for kind in ("ldap", "smtp", "imap")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.timings = {"ldap_bind_provider2_seconds": found["ldap"], "smtp_auth_host2_seconds": found["smtp"],
                          "imap_login_host2_seconds": found["imap"]}
    finally:
        try:
            user = lab.ldap(p1, dn, new)
            user.extend.standard.modify_password(dn, new, old)
        except LDAPException:
            user = lab.admin(p1)
            user.extend.standard.modify_password(dn, None, old)
        user.unbind()
        restored = probe_until(lambda: lab.login_ok("ldap", p2, address, old), time.monotonic(), 30)
    logins = [result.timings["smtp_auth_host2_seconds"], result.timings["imap_login_host2_seconds"]]
    result.details = {"account": address, "changed_on": p1.name, "checked_on": p2.name,
                      "goal_seconds": PASSWORD_GOAL_SECONDS, "old_password_restored": restored is not None}
    result.passed = restored is not None and all(t is not None and t <= PASSWORD_GOAL_SECONDS for t in logins)
    return result


def _sender_and_recipients(lab: Lab) -> tuple[str, list[str]]:
    addresses = [a.address for a in lab.config.accounts]
    return addresses[-1], addresses[:-1] or addresses


def drill_mta_down(lab: Lab, rate: float, duration: float) -> DrillResult:
    """Stop the second host (its MTA, provider and store) for the middle third of a stream."""
    result = DrillResult("mta-down")
    victim, survivor = lab.config.hosts[1], lab.config.hosts[0]
    sender, recipients = _sender_and_recipients(lab)
    stream = Stream(lab, sender, recipients, rate, duration)
    marks: dict[str, float] = {}

    def stop() -> None:
        marks["stop"] = time.monotonic()
        lab.stop(victim)
        marks["stopped"] = time.monotonic()

    def start() -> None:
        marks["start"] = time.monotonic()
        marks["healthy_after"] = lab.start(victim)

    for thread in stream.go([(duration / 3, stop), (2 * duration / 3, start)]):
        thread.join()
    result.timings = {"stop_seconds": marks["stopped"] - marks["stop"], "down_seconds": marks["start"] - marks["stop"],
                      "restart_healthy_seconds": marks["healthy_after"]}
    result.details["stopped_host"] = victim.name
    lab.flush_queues()
    runbook: dict[str, Any] = {}

    def dedupe() -> None:  # the stopped host is a store too: the runbook's step after it is back
        runbook["rc"], runbook["answer"] = _store_command(lab, "dedupe", victim, survivor)

    stream.settle(result, survivor, then=dedupe if lab.homed_on(victim) else None)
    if runbook:
        result.details.update({"dedupe_rc": runbook["rc"], "dedupe": runbook["answer"]})
        result.passed = result.passed and runbook["rc"] == 0
    return result


def _store_command(lab: Lab, verb: str, store: LabHost, ldap_host: LabHost) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "qnprov", "store", verb, store.hostname, "-i",
                           str(lab.config.inventory), "--json", "--ldap-url",
                           f"ldaps://127.0.0.1:{ldap_host.publish['ldap'][0]}"],
                          capture_output=True, text=True, timeout=300, check=False)
    # stdout is the command's JSON document (small); else the last of its error line
    return proc.returncode, proc.stdout.strip() or proc.stderr.strip()[-400:]


def mailbox_guids(lab: Lab, host: LabHost, user: str) -> set[tuple[str, str]]:
    proc = lab.exec(host, "doveadm", "-f", "tab", "fetch", "-u", user, "mailbox guid", "ALL")
    if proc.returncode != 0:
        raise ConfigError(f"doveadm fetch on {host.name} for {user}: {proc.stderr.strip()[:200]}")
    return parse_guids(proc.stdout)


def synced_users(status: str) -> set[str]:
    """Users with a successful sync in ``doveadm -f tab replicator status '*'`` output."""
    lines = [line.split("\t") for line in status.splitlines() if line.strip()]
    if not lines or "username" not in lines[0] or "success sync" not in lines[0]:
        return set()
    user, success = lines[0].index("username"), lines[0].index("success sync")
    return {f[user].lower() for f in lines[1:] if len(f) == len(lines[0]) and f[success].strip() not in ("", "-")}


def presync(lab: Lab, replica: LabHost, users: list[str], timeout: float = 120) -> float | None:
    """The drill's precondition (runbook step 1): the replica has synced every account of the
    store; a sync is forced on both stores first. Seconds it took, or None."""
    began = time.monotonic()
    for host in lab.config.hosts:
        lab.exec(host, "doveadm", "replicator", "replicate", "-f", "*")
    while time.monotonic() - began < timeout:
        status = lab.exec(replica, "doveadm", "-f", "tab", "replicator", "status", "*").stdout
        if {u.lower() for u in users} <= synced_users(status):
            return time.monotonic() - began
        time.sleep(2)
    return None


def mail_hosts(lab: Lab, host: LabHost) -> dict[str, str]:
    """qnMailHost of every account, as provider ``host`` has it."""
    conn = lab.admin(host)
    try:
        conn.search(lab.config.base_dn, "(objectClass=qnMailAccount)", attributes=["mail", "qnMailHost"])
        return {str(e["mail"].value).lower(): str(e["qnMailHost"].value) for e in conn.entries}
    finally:
        conn.unbind()


def put_back(lab: Lab, host: LabHost, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Write back qnMailHost of the accounts a drill left elsewhere than it found them."""
    moved = sorted(mail for mail, home in before.items() if after.get(mail) != home)
    conn = lab.admin(host)
    try:
        for mail in moved:
            dn = lab.dn_cache.setdefault(mail, lab.dn_of(mail))
            conn.modify(dn, {"qnMailHost": [(MODIFY_REPLACE, [before[mail]])]})
    finally:
        conn.unbind()
    return moved


def drill_store_down(lab: Lab, rate: float, duration: float) -> DrillResult:
    """Stop the first host's store mid-stream, fail over to its replica, then back."""
    result = DrillResult("store-down")
    store, replica = lab.config.hosts[0], lab.config.hosts[1]
    homed = lab.homed_on(store)
    if not homed:
        raise ConfigError(f"no demo account lives on {store.hostname} (mail_host): nothing to fail over")
    sender, recipients = _sender_and_recipients(lab)
    stream = Stream(lab, sender, recipients, rate, duration)
    marks: dict[str, Any] = {"presync": presync(lab, replica, homed), "homes": mail_hosts(lab, store)}

    def outage() -> None:
        marks["stop"] = time.monotonic()
        lab.stop(store)
        marks["stopped"] = time.monotonic()
        marks["failover_rc"], marks["failover"] = _store_command(lab, "failover", store, replica)
        marks["failover_done"] = time.monotonic()
        marks["login"] = probe_until(lambda: lab.login_ok("imap", replica, homed[0], lab.password(homed[0])),
                                     marks["stop"], 120, interval=0.5)
        lab.flush_queues()

    for thread in stream.go([(min(5.0, duration / 4), outage)]):
        thread.join()
    result.timings = {"presync_seconds": marks["presync"], "stop_seconds": marks["stopped"] - marks["stop"],
                      "failover_command_seconds": marks["failover_done"] - marks["stopped"],
                      "login_restored_seconds": marks["login"]}
    result.timings["restart_healthy_seconds"] = lab.start(store)
    lab.exec(store, "doveadm", "replicator", "replicate", "-f", "*")
    began, rc, answer = time.monotonic(), 1, ""
    while time.monotonic() - began < 300:
        rc, answer = _store_command(lab, "failback", store, store)
        if rc == 0:
            break
        lab.exec(store, "doveadm", "replicator", "replicate", "-f", "*")
        time.sleep(5)
    result.timings["failback_after_restart_seconds"] = time.monotonic() - began
    # failback must put every account back where it was, no more (an account of another store stays)
    misplaced = put_back(lab, store, marks["homes"], mail_hosts(lab, store))
    lab.flush_queues()

    def dedupe() -> None:  # the runbook's last step, once the queues are empty
        marks["dedupe_rc"], marks["dedupe"] = _store_command(lab, "dedupe", store, replica)

    stream.settle(result, replica, then=dedupe)
    began, same = time.monotonic(), False
    users = [a.address for a in lab.config.accounts]
    while time.monotonic() - began < 180 and not same:
        guids = {h.name: {u: mailbox_guids(lab, h, u) for u in users} for h in (store, replica)}
        same = guids[store.name] == guids[replica.name]
        if not same:
            for host in (store, replica):
                lab.exec(host, "doveadm", "replicator", "replicate", "-f", "*")
            time.sleep(5)
    result.timings["stores_converged_seconds"] = time.monotonic() - began if same else None
    if not same:  # which mailboxes differ, as (user, messages only on store, only on replica)
        result.details["stores_differ"] = [
            [u, len(guids[store.name][u] - guids[replica.name][u]), len(guids[replica.name][u] - guids[store.name][u])]
            for u in users if guids[store.name][u] != guids[replica.name][u]]
    result.details.update({"stopped_store": store.hostname, "replica": replica.hostname, "accounts_moved": homed,
                           "failover_rc": marks["failover_rc"], "failover": marks["failover"],
                           "failback_rc": rc, "failback": answer, "stores_identical": same,
                           "dedupe_rc": marks["dedupe_rc"], "dedupe": marks["dedupe"],
                           "misplaced_after_failback": misplaced,
                           "login_goal_seconds": LOGIN_GOAL_SECONDS})
    login = marks["login"]
    result.passed = (result.passed and same and marks["failover_rc"] == 0 and rc == 0 and not misplaced
                     and marks["dedupe_rc"] == 0
                     and login is not None and login <= LOGIN_GOAL_SECONDS)
    return result


NFT_CUT = """table inet qnprov_drill {{
  chain i {{ type filter hook input priority -50; ip saddr {0} drop; }}
  chain o {{ type filter hook output priority -50; ip daddr {0} drop; }}
}}
"""


def drill_split_brain(lab: Lab) -> DrillResult:
    """Cut provider 1 off provider 2, write conflicting values on each, reconnect, watch them converge."""
    result = DrillResult("split-brain")
    p1, p2 = lab.config.hosts[0], lab.config.hosts[1]
    address = lab.config.accounts[0].address
    dn = lab.dn_cache.setdefault(address, lab.dn_of(address))
    token = uuid.uuid4().hex[:8]
    values = {p1.name: f"drill {token} written on {p1.name}", p2.name: f"drill {token} written on {p2.name}"}

    def read(host: LabHost) -> list[str]:
        conn = lab.admin(host)
        try:
            conn.search(dn, "(objectClass=*)", search_scope="BASE", attributes=["description"])
            return [str(v) for v in conn.entries[0]["description"].values] if conn.entries else []
        finally:
            conn.unbind()

    def write(host: LabHost, value: list[str]) -> None:
        conn = lab.admin(host)
        try:
            change = (MODIFY_REPLACE, value) if value else (MODIFY_DELETE, [])
            conn.modify(dn, {"description": [change]})
        finally:
            conn.unbind()

    original = read(p1)
    cut = podman("exec", "-i", p1.container, "nft", "-f", "-", check=False, timeout=30, input=NFT_CUT.format(p2.ip))
    if cut.returncode != 0:
        raise ConfigError(f"cannot cut {p1.name} off {p2.name} with nft: {cut.stderr.strip()[:200]}")
    try:
        write(p1, [values[p1.name]])
        time.sleep(1.0)  # the later write has the later CSN
        write(p2, [values[p2.name]])
        time.sleep(2.0)
        during = {p1.name: read(p1), p2.name: read(p2)}
    finally:
        lab.exec(p1, "nft", "delete", "table", "inet", "qnprov_drill", timeout=30)
    healed = time.monotonic()
    final: dict[str, list[str]] = {}
    while time.monotonic() - healed < 120:
        final = {p1.name: read(p1), p2.name: read(p2)}
        if final[p1.name] == final[p2.name]:
            break
        time.sleep(0.5)
    converged = final[p1.name] == final[p2.name]
    result.timings["converge_seconds"] = time.monotonic() - healed if converged else None
    winner = next((name for name, v in values.items() if final[p1.name] == [v]), None) if converged else None
    write(p1, original)
    restored = probe_until(lambda: read(p2) == original, time.monotonic(), 60, interval=0.5)
    result.details = {"account": address, "attribute": "description", "written": values, "during_cut": during,
                      "final": final, "winner": winner, "original_restored": restored is not None}
    result.passed = (converged and winner is not None and during[p1.name] != during[p2.name]
                     and restored is not None)
    return result


def run(config: LabConfig, names: list[str], *, rate: float = 20.0, duration: float = 60.0) -> list[DrillResult]:
    """Run the named drills in order; a drill that raises is reported as failed with its error."""
    lab = Lab(config)
    results = []
    for name in names:
        try:
            if name == "password-replication":
                results.append(drill_password(lab))
            elif name == "mta-down":
                results.append(drill_mta_down(lab, rate, duration))
            elif name == "store-down":
                results.append(drill_store_down(lab, rate, duration))
            elif name == "split-brain":
                results.append(drill_split_brain(lab))
            else:
                raise ConfigError(f"unknown drill {name!r} (known: {', '.join(DRILLS)})")
        except (QnprovError, LDAPException, KeyError, *MAIL_ERRORS, subprocess.SubprocessError) as exc:
            results.append(DrillResult(name, error=f"{type(exc).__name__}: {exc}"[:400]))
        finally:  # whatever happened, leave every host running
            for host in config.hosts:
                if container_state(host.container) != "running":
                    lab.start(host)
    return results
