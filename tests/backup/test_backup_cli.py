"""`qnprov backup`: arguments, errors and output, through the real playbook on a local host.

The host is this machine itself (ansible_connection: local) with the host script rendered into a
temporary directory and a real restic repository: everything but systemd (`backup run` starts the
unit, so it is proven only in the lab).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qnprov import paths
from qnprov.backup.reports import document, parse_report, read_reports
from qnprov_testing.backup_script import HostScript

QNPROV = [sys.executable, "-m", "qnprov"]
needs_restic = pytest.mark.skipif(shutil.which("restic") is None, reason="restic missing: scripts/bootstrap.sh")


def qnprov(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QNPROV_STATE_DIR": str(state)}
    return subprocess.run([*QNPROV, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=paths.PROJECT_ROOT, check=False)


def local_inventory(host: HostScript) -> Path:
    path = host.root / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"mail_all": {"hosts": {"mail1": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": "/usr/bin/python3",
        "qnprov_backup_script": str(host.script), "backup_state_dir": host.config["state_dir"]}}}}}}))
    host.script.chmod(0o755)
    return path


def test_a_snapshot_id_that_is_not_hexadecimal_is_refused(tmp_path: Path) -> None:
    proc = qnprov("backup", "verify", "-i", "lab", "--snapshot", "latest;rm", state=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: snapshot id 'latest;rm' is not a restic id (hexadecimal)"


def test_an_unknown_inventory_is_one_line(tmp_path: Path) -> None:
    proc = qnprov("backup", "list", "-i", str(tmp_path / "none"), "--json", state=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: inventory ") and "not found" in proc.stderr


def test_a_host_without_a_report_is_a_failed_host(tmp_path: Path) -> None:
    (tmp_path / "mail1.json").write_text(json.dumps({"ok": True, "command": "list", "snapshots": []}))
    reports = read_reports(tmp_path, ["mail1", "mail2"], {"mail2": "Run the host script: No such file"})
    assert reports["mail1"].ok and reports["mail1"].data == {"snapshots": []}
    assert not reports["mail2"].ok and reports["mail2"].error_kind == "no-report"
    assert document("list", reports)["ok"] is False
    assert document("list", reports)["hosts"]["mail2"]["error"] == {
        "kind": "no-report", "message": "Run the host script: No such file",
        "hint": "the host sent no report: is the backup role deployed there?"}
    assert parse_report("h", "not json").error_kind == "bad-report"


@needs_restic
def test_list_and_verify_through_the_playbook(host_script: HostScript, tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "overrides.yml").write_text("local_domains: [quangninh.test]\n")
    host_script.write_config(files=[{"name": "policy", "path": str(policy)}])
    host_script.run("init")
    code, run, _ = host_script.run("run")
    assert code == 0, run
    inventory = local_inventory(host_script)
    state = tmp_path / "qnprov-state"

    listed = qnprov("backup", "list", "-i", str(inventory), "--json", state=state)
    assert listed.returncode == 0, listed.stderr
    answer = json.loads(listed.stdout)
    assert answer["action"] == "list" and answer["ok"] is True
    [snap] = answer["hosts"]["mail1"]["snapshots"]
    assert snap["id"] == run["snapshot"][:8] and snap["host"] == "mail1" and snap["contents"]["files"] == ["policy"]

    verified = qnprov("backup", "verify", "-i", str(inventory), state=state)
    assert verified.returncode == 0, verified.stderr
    assert "mail1" in verified.stdout and run["snapshot"][:8] in verified.stdout

    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-password-b41c\n")
    host_script.write_config(password_file=str(wrong))
    failed = qnprov("backup", "list", "-i", str(inventory), state=state)
    assert failed.returncode == 1
    assert f"mail1: the repository password is wrong: no key in {host_script.config['repository']} opens" \
           in failed.stderr
    assert "wrong-password-b41c" not in failed.stdout + failed.stderr
    as_json = json.loads(qnprov("backup", "verify", "-i", str(inventory), "--json", state=state).stdout)
    assert as_json["ok"] is False and as_json["hosts"]["mail1"]["error"]["kind"] == "wrong-password"


def test_a_host_without_the_role_is_named(host_script: HostScript, tmp_path: Path) -> None:
    inventory = local_inventory(host_script)
    host_script.script.unlink()
    proc = qnprov("backup", "list", "-i", str(inventory), "--json", state=tmp_path / "state")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["hosts"]["mail1"]["error"]
    assert error["kind"] == "no-report"
    assert error["message"] == (f"Stop on a host without the backup role: {host_script.script} is not installed "
                                "on this host: deploy playbooks/backup.yml first")
