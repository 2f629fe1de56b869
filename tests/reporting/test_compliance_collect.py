"""Collection over the deploy connection: playbooks/report-collect.yml through ansible-runner.

The "remote" MTA is this machine over Ansible's local connection (no lab needed); a
second MTA at a closed loopback port is unreachable and must be named in the report.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import yaml
from fleet_data import Fleet
from typer.testing import CliRunner

from qnprov.cli import app
from qnprov.reporting.collect import fetch_trails

#: One week keeps the test short: each file is one fetch (about 0.5 s here).
SINCE, UNTIL = dt.date(2026, 11, 2), dt.date(2026, 11, 9)


def _inventory(tmp_path: Path, audit_dir: Path) -> Path:
    inventory = tmp_path / "inventory" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text(yaml.safe_dump({"all": {"children": {"mta": {"hosts": {
        "mta-local": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                      "qnprov_milter_audit_dir": str(audit_dir)},
        "mta-down": {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9,
                     "ansible_ssh_common_args": "-o BatchMode=yes -o ConnectTimeout=5"},
    }}}}}), encoding="utf-8")
    return inventory


def test_fetch_collects_the_period_and_names_the_unreachable_host(fleet: Fleet, tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, fleet.dirs["mail1"])
    trails = {t.host: t for t in fetch_trails(inventory, SINCE, UNTIL, dest=tmp_path / "fetched")}
    assert set(trails) == {"mta-local", "mta-down"}
    local = trails["mta-local"]
    assert local.error is None
    week = sorted(p.name for p in fleet.dirs["mail1"].iterdir() if "2026-11-02" <= p.name[6:16] < "2026-11-09")
    assert [p.name for p in local.files] == week and len(week) == 7
    for path in local.files:
        assert path.read_bytes() == (fleet.dirs["mail1"] / path.name).read_bytes()
    assert trails["mta-down"].files == []
    assert trails["mta-down"].error is not None and "collection failed" in trails["mta-down"].error

    runner = CliRunner()
    result = runner.invoke(app, ["report", "compliance", "-i", str(inventory.parent), "--since", str(SINCE),
                                 "--until", str(UNTIL), "--format", "json", "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output  # a host could not be collected
    document = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    hosts = {h["host"]: h for h in document["hosts"]}
    in_week = [e for e in fleet.trails["mail1"] if str(SINCE) <= e["time"] < str(UNTIL)]
    assert hosts["mta-local"]["ok"] and hosts["mta-local"]["records"] == len(in_week) > 0
    assert hosts["mta-local"]["files"] == 7
    assert hosts["mta-down"]["reachable"] is False and not hosts["mta-down"]["ok"]
    assert document["totals"]["records_in_period"] == len(in_week)
    assert document["weeks"] == ["2026-11-02"]
    assert document["directory"]["available"] is False  # this inventory names no directory
    assert "audit chain of mta-down" in result.output
