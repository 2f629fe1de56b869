"""Issue 10's failure drills, for real: `qnprov lab drill -i lab-ha --json` on the multi-host lab.

One `lab up -i lab-ha` per session (tests/labha/conftest.py: it converges both
hosts, or re-converges a lab that is already up), then every drill once, in one
`qnprov lab drill` run: the tests below assert the figures it printed. The drills stop
and start one host at a time and leave both running; the lab stays up afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from qnprov import lab, labcheck, paths

LAB_HA = paths.INVENTORIES_DIR / "lab-ha"


@pytest.fixture(scope="module")
def lab_ha(lab_ha_up: tuple[lab.LabConfig, dict[str, Any]]) -> lab.LabConfig:
    return lab_ha_up[0]


@pytest.fixture(scope="module")
def drills(lab_ha: lab.LabConfig) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "qnprov", "lab", "drill", "-i", "lab-ha", "--json"],
                          capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=3600)
    doc = json.loads(proc.stdout)
    by_name = {d["name"]: d for d in doc}
    # The exit code says whether every drill passed; each test below says which figure failed.
    return {"rc": proc.returncode, "stderr": proc.stderr[-2000:], **by_name}


def _mail_figures_exact(drill: dict[str, Any]) -> None:
    assert drill["error"] is None, drill["error"]
    # the command's defaults are the stream: 20 messages a second for 60 s, sent by
    # 16 clients, each from its own address on the lab network, every one of them accepted
    assert (drill["details"]["rate_per_second"], drill["details"]["duration_seconds"]) == (20, 60)
    assert drill["sent"] == 1200
    assert sorted(drill["details"]["accepted_by_client"]) == [f"10.89.7.{n}" for n in range(239, 255)]
    assert drill["accepted"] == drill["sent"], drill["details"]["client_errors"]
    assert drill["delivered"] == drill["accepted"]
    assert (drill["duplicates"], drill["bounced"], drill["lost"]) == (0, 0, 0)
    assert drill["details"]["unconfirmed_delivered"] == 0


def _runbook_removed_every_copy(drill: dict[str, Any], accounts: int) -> None:
    """``qnprov store dedupe`` ran on the store that stopped, found every second copy the
    stop left (at-least-once LMTP) and expunged it."""
    dedupe = json.loads(drill["details"]["dedupe"])
    assert drill["details"]["dedupe_rc"] == 0 and dedupe["applied"] is True
    assert dedupe["removed"] == dedupe["copies"]
    # (a copy an earlier run left is removed too: count this stream's own)
    ours = [m for m in dedupe["messages"] if m["message_id"].startswith(f"<drill-{drill['details']['run']}-")]
    assert len(ours) == drill["details"]["duplicates_before_runbook"]
    assert dedupe["accounts"] == accounts and dedupe["messages_read"] >= 1


def test_the_command_printed_every_drill_and_exits_by_their_verdicts(drills):
    assert [name for name in ("password-replication", "mta-down", "store-down", "split-brain") if name in drills] \
        == ["password-replication", "mta-down", "store-down", "split-brain"]
    failed = [name for name in ("password-replication", "mta-down", "store-down", "split-brain")
              if not drills[name]["passed"]]
    assert (drills["rc"] == 0) == (failed == []), drills["stderr"]
    assert failed == []


def test_a_password_changed_on_provider_1_authenticates_on_host_2_within_2_s(drills):
    drill = drills["password-replication"]
    assert drill["error"] is None, drill["error"]
    assert drill["details"]["changed_on"] == "ha1" and drill["details"]["checked_on"] == "ha2"
    for timing in ("ldap_bind_provider2_seconds", "smtp_auth_host2_seconds", "imap_login_host2_seconds"):
        assert drill["timings"][timing] is not None and 0 <= drill["timings"][timing] <= 2.0, drill["timings"]
    assert drill["details"]["old_password_restored"] is True


def test_an_mta_down_mid_stream_loses_and_duplicates_nothing(drills):
    drill = drills["mta-down"]
    _mail_figures_exact(drill)
    assert drill["details"]["stopped_host"] == "ha2"
    # while ha2 was down, the messages that preferred it went through ha1
    assert drill["details"]["rerouted_to_other_mta"] >= 1
    assert drill["details"]["accepted_by_host"]["ha1"] > drill["details"]["accepted_by_host"].get("ha2", 0)
    assert drill["timings"]["down_seconds"] > 0
    # ha2 is a store too, stopped mid-delivery: the runbook's step once it is back (a copy
    # its LMTP saved before its duplicate record was written) ran, and removed every copy
    _runbook_removed_every_copy(drill, accounts=1)  # binhtt, the demo account homed on ha2


def test_a_store_down_fails_over_within_60_s_and_the_stores_converge(drills):
    drill = drills["store-down"]
    _mail_figures_exact(drill)
    assert drill["details"]["failover_rc"] == 0 and drill["details"]["failback_rc"] == 0
    failover = json.loads(drill["details"]["failover"])
    assert failover["store"] == "ha1.quangninh.test" and failover["target"] == "ha2.quangninh.test"
    assert failover["moved"] == failover["to_move"] >= 1
    # failback put back exactly the accounts failover moved: none of ha2's own accounts moved to ha1
    assert drill["details"]["misplaced_after_failback"] == []
    failback = json.loads(drill["details"]["failback"])
    assert sorted(a["mail"] for a in failback["accounts"]) == sorted(a["mail"] for a in failover["accounts"])
    assert 0 < drill["timings"]["login_restored_seconds"] <= 60
    assert drill["details"]["stores_identical"] is True
    # the runbook's last step ran on the recovered store: whatever second copies the
    # failover left (at-least-once LMTP across the stop) are counted, then expunged
    _runbook_removed_every_copy(drill, accounts=len(drill["details"]["accounts_moved"]))
    assert drill["timings"]["stores_converged_seconds"] is not None


def test_split_brain_converges_to_one_of_the_two_writes(drills):
    drill = drills["split-brain"]
    assert drill["error"] is None, drill["error"]
    details = drill["details"]
    # cut off, each provider held its own write
    assert details["during_cut"] == {name: [value] for name, value in details["written"].items()}
    assert details["winner"] in ("ha1", "ha2")
    assert details["final"]["ha1"] == details["final"]["ha2"] == [details["written"][details["winner"]]]
    assert details["original_restored"] is True


def test_both_hosts_are_running_and_healthy_after_the_drills(lab_ha, drills):
    doc = labcheck.status(lab_ha)
    assert doc["running"] is True
    for host in doc["hosts"]:
        assert {svc: state for svc, state in host["services"].items() if state != "active"} == {}, host["name"]
