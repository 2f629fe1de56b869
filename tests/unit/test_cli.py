"""The CLI surface: help, one-line errors, the lab status document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from qnprov import paths

QNPROV = [sys.executable, "-m", "qnprov"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "QNPROV_LAB_INVENTORY"}  # the default lab
    return subprocess.run([*QNPROV, *args], capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})}, cwd=paths.PROJECT_ROOT)


def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("deploy", "lab", "image"):
        assert command in proc.stdout


def test_version_prints_the_package_version_and_exits_0():
    from importlib.metadata import version

    from qnprov import __version__

    proc = run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == version("qnprov") == __version__
    assert "Missing command" not in proc.stderr


def test_unknown_inventory_is_one_line_and_exit_2():
    proc = run("deploy", "-i", "no-such-inventory")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no-such-inventory" in proc.stderr and "Traceback" not in proc.stderr


def test_wrong_variable_stops_deploy_before_anything_runs(tmp_path: Path):
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"children": {"mail_all": {"children": {"directory": {"hosts": {"ghost.invalid": {}}},
                                                          "mta": {"hosts": {"ghost.invalid": {}}}}}}}}))
    lab_vars = yaml.safe_load((paths.INVENTORIES_DIR / "lab" / "group_vars" / "all" / "main.yml").read_text())
    lab_vars["postfix_no_such_setting"] = True
    (inv / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(lab_vars, allow_unicode=True))
    proc = run("deploy", "-i", str(inv), "--json", env={"QNPROV_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 2, proc.stderr
    assert "postfix_no_such_setting" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stdout == "", "no run result: nothing ran"


def test_lab_status_json_has_the_documented_shape(tmp_path: Path):
    proc = run("lab", "status", "--json", env={"QNPROV_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc["running"], bool)
    assert doc["endpoints"] == {
        "ssh": "127.0.0.1:10022", "smtp": "127.0.0.1:10025", "submission": "127.0.0.1:10587",
        "submissions": "127.0.0.1:10465",
        "imaps": "127.0.0.1:10993", "imap": "127.0.0.1:10143", "ldap": "127.0.0.1:10636",
        "sieve": "127.0.0.1:14190", "https": "127.0.0.1:10443"}
    assert doc["domain"] == "quangninh.test"
    assert [a["address"] for a in doc["accounts"]] == [
        "annv@quangninh.test", "binhtt@quangninh.test", "duclm@quangninh.test"]
    assert set(doc["ldap"]) == {"url", "base_dn", "bind_dn", "bind_password"}
    assert doc["ldap"]["url"] == "ldaps://127.0.0.1:10636"
    assert doc["ca_cert"].startswith(str(tmp_path))
    assert doc["hosts"][0]["container"] == "qnprov-lab-mail1"
    assert set(doc["hosts"][0]["services"]) >= {"slapd", "postfix", "dovecot", "rspamd"}
