"""`qnprov restore --host`: the controller's argument checks and document, and the host script's
`restore-host` plan (--check) and its refusals with real restic on a local repository.

The whole rebuild on a brand-new systemd container is tests/testbed/test_restore_host.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qnprov import paths
from qnprov.backup import reports
from qnprov.backup.restore import check_host, converge_steps, host_document
from qnprov.errors import InputError
from qnprov_testing.backup_script import HostScript, render

NO_SERVICE = "qnprov-test-no-such-service"  # not installed anywhere: the plan names no service


def _script_namespace() -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(compile(render("qnprov-backup.py.j2"), "qnprov-backup", "exec"), namespace)  # noqa: S102 - our own script
    return namespace


def test_the_host_is_one_exact_inventory_host() -> None:
    assert check_host("mail1", ["mail1", "mail2"]) == "mail1"
    for bad in ("mail*", "mail1,mail2", "all", "", "mail3"):
        with pytest.raises(InputError) as caught:
            check_host(bad, ["mail1", "mail2"])
        assert str(caught.value) == (f"--host {bad!r} is not a host of the inventory's mail_all (mail1, mail2): "
                                     "name exactly one host")
    assert "restore-host" in reports.ACTIONS
    assert reports.HINTS["restore-failed"].startswith("the host's services are stopped")


def test_the_converge_runs_site_then_backup_unless_the_site_was_converged() -> None:
    assert converge_steps(skip_site=False) == ["site.yml", "backup.yml"]
    assert converge_steps(skip_site=True) == ["backup.yml"]


def test_the_document_names_the_failed_step_and_the_total_seconds() -> None:
    converged = [{"step": "converge-backup", "playbook": "backup.yml", "ok": True, "seconds": 4.0}]
    report = {"ok": False, "snapshot": "1a2b3c4d", "snapshot_time": "2026-12-07T21:00:00Z",
              "steps": [{"step": "stop-services", "ok": True}, {"step": "snapshot", "ok": False, "error": "x"}],
              "error": {"kind": "wrong-password", "message": "step snapshot failed: ...", "hint": "h"}}
    document = host_document("mail1", converged, report, 12.345, check=False, converge=["backup.yml"])
    assert (document["ok"], document["failed_step"], document["seconds"]) == (False, "snapshot", 12.35)
    assert [s["step"] for s in document["steps"]] == ["converge-backup", "stop-services", "snapshot"]
    assert document["error"]["kind"] == "wrong-password" and "plan" not in document
    fine = host_document("mail1", converged, {"ok": True, "steps": [{"step": "files", "ok": True}]}, 1.0,
                         check=False, converge=["backup.yml"])
    assert fine["ok"] is True and fine["failed_step"] is None and "error" not in fine
    failed_converge = host_document("mail1", [{**converged[0], "ok": False, "error": "boom"}], None, 2.0,
                                    check=False, converge=["backup.yml"],
                                    error={"kind": "converge-failed", "message": "m", "hint": ""})
    assert (failed_converge["ok"], failed_converge["failed_step"]) == (False, "converge-backup")
    planned = host_document("mail1", [], {"ok": True, "plan": ["stop services: none installed"]}, 0.5, check=True,
                            converge=["site.yml", "backup.yml"])
    assert planned["plan"] == ["converge playbooks/site.yml --limit mail1",
                               "converge playbooks/backup.yml --limit mail1", "stop services: none installed"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qnprov", "restore", *args], capture_output=True, text=True,
                          timeout=120, cwd=paths.PROJECT_ROOT, check=False)


def test_the_cli_refuses_bad_arguments_before_any_host_is_asked(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"mail_all": {"hosts": {
        "mail1": {"ansible_host": "192.0.2.1"}, "mail2": {"ansible_host": "192.0.2.2"}}}}}}))
    done = _cli("-i", str(inventory), "--host", "mail*")
    assert done.returncode == 2
    assert "--host 'mail*' is not a host of the inventory's mail_all (mail1, mail2)" in done.stderr
    done = _cli("-i", str(inventory), "--host", "mail1", "--snapshot", "../x")
    assert done.returncode == 2 and "snapshot id '../x' is not a restic id (hexadecimal)" in done.stderr
    done = _cli("--host", "mail1")
    assert done.returncode == 2 and "qnprov restore needs -i INVENTORY and --host HOST" in done.stderr


def test_the_plan_comes_from_the_snapshots_manifest() -> None:
    plan = _script_namespace()["restore_plan"]
    manifest = {"ldap": {"config.ldif": {"entries": 11}, "data.ldif": {"entries": 42}},
                "mail": {"an@q.test": {"messages": 5}, "binh@q.test": {"messages": 2}},
                "files": {"dkim": {"present": True}, "tls": {"present": False}, "quarantine": {"present": True}},
                "audit": {"present": True, "files": {"2026-12-07.jsonl": {}}}}
    assert plan(manifest, ["slapd", "dovecot", "postfix"]) == [  # type: ignore[operator]
        "stop services: postfix, dovecot, slapd",
        "restore files: dkim",
        "restore the audit trail: 1 files",
        "reload the directory: slapadd -n 0 (11 entries), -n 1 (42 entries)",
        "restore 2 mailboxes (doveadm backup -R), 7 messages, Sieve scripts",
        "put the quarantine back into postfix hold (postsuper -s)",
        "start services: slapd, dovecot, postfix, check they answer",
        "verify the audit chain"]


def test_the_data_directory_comes_from_the_snapshots_cn_config(tmp_path: Path) -> None:
    data_dir = _script_namespace()["slapd_data_dir"]
    config = tmp_path / "config.ldif"
    config.write_text("dn: cn=config\nobjectClass: olcGlobal\n\ndn: olcDatabase={0}config,cn=config\n"
                      "olcDbDirectory: /wrong\n\ndn: olcDatabase={1}mdb,cn=config\nobjectClass: olcMdbConfig\n"
                      "olcDbDirectory: /var/lib/l\n dap\nolcSuffix: dc=q\n")
    assert data_dir(str(config)) == "/var/lib/ldap"  # type: ignore[operator]
    config.write_text("dn: cn=config\nobjectClass: olcGlobal\n")
    with pytest.raises(Exception, match=r"no olcDbDirectory for database \{1\}"):
        data_dir(str(config))  # type: ignore[operator]


def test_check_plans_from_the_snapshot_and_refusals_stop_before_any_change(host_script: HostScript,
                                                                            tmp_path: Path) -> None:
    keys = tmp_path / "dkim"
    keys.mkdir()
    (keys / "q.test.mail.key").write_text("not a real key\n")
    host_script.write_config(files=[{"name": "dkim", "path": str(keys)}], restore_services=[NO_SERVICE])
    host_script.run("init")
    code, ran, _ = host_script.run("run")
    assert code == 0, ran
    code, planned, _ = host_script.run("restore-host", "--check")
    assert code == 0, planned
    assert (planned["snapshot"], planned["check"], planned["restored"], planned["services"]) == (
        ran["snapshot"][:8], True, False, [])
    assert planned["plan"][:2] == ["stop services: none installed", "restore files: dkim"]
    assert planned["contents"]["files"] == ["dkim"]
    assert planned["steps"] == []

    # A snapshot id that is not there, and a wrong key: refused at the snapshot step, nothing written.
    (keys / "q.test.mail.key").write_text("the converge's new key\n")
    code, missing, _ = host_script.run("restore-host", "--snapshot", "deadbeef")
    assert code == 1 and missing["error"]["kind"] == "no-snapshot"
    assert missing["error"]["message"] == (
        f"step snapshot failed: no snapshot deadbeef in {host_script.config['repository']}; the services were left "
        "stopped (none installed)")
    assert missing["failed_step"] == "snapshot"
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-9e1\n")
    host_script.write_config(password_file=str(wrong))
    code, refused, _ = host_script.run("restore-host")
    assert code == 1 and refused["error"]["kind"] == "wrong-password"
    assert [s["step"] for s in refused["steps"]] == ["stop-services", "snapshot"]
    assert "not-the-password" not in str(refused)
    assert (keys / "q.test.mail.key").read_text() == "the converge's new key\n"
    assert sorted(os.listdir(tmp_path)) == sorted(["config.json", "dkim", "qnprov-backup", "repo", "restic-password",
                                                   "staging", "state", "wrong-password"])


def test_files_and_the_audit_trail_come_back_and_a_failed_step_is_named(host_script: HostScript,
                                                                          tmp_path: Path) -> None:
    """On the controller with real restic: no service, directory or mailbox, only files and the trail."""
    keys = tmp_path / "keys" / "dkim"
    keys.mkdir(parents=True)
    (keys / "q.test.mail.key").write_text("the backed-up key\n")
    (keys / "q.test.mail.key").chmod(0o600)
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "2026-12-07.jsonl").write_bytes(b'{"seq":1}\n{"seq":2}\n')
    host_script.write_config(files=[{"name": "dkim", "path": str(keys)}], audit_dir=str(audit),
                             restore_services=[NO_SERVICE])
    host_script.run("init")
    assert host_script.run("run")[0] == 0
    # The "converge" of a new host: a new key and an empty trail.
    (keys / "q.test.mail.key").write_text("the converge's new key\n")
    (audit / "2026-12-07.jsonl").write_bytes(b"")
    code, restored, _ = host_script.run("restore-host")
    assert code == 0, restored
    assert [s["step"] for s in restored["steps"]] == [
        "stop-services", "snapshot", "restic-restore", "files", "audit", "quarantine", "start-services",
        "audit-verify"]
    assert (keys / "q.test.mail.key").read_text() == "the backed-up key\n"
    assert oct((keys / "q.test.mail.key").stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in keys.parent.iterdir() if p.name.startswith("dkim.pre-restore-")]  # kept, not deleted
    assert (audit / "2026-12-07.jsonl").read_bytes() == b'{"seq":1}\n{"seq":2}\n'
    assert restored["steps"][-1]["result"] == "qnprov's audit verify is not installed on this host (no milter)"
    assert not list((Path(host_script.config["staging_dir"]).parent / "restore").iterdir())  # no scratch left

    # The key's directory cannot be created (its parent is a file now): the step is named, nothing starts.
    for old in keys.parent.iterdir():
        shutil.rmtree(old)
    keys.parent.rmdir()
    keys.parent.write_text("not a directory\n")
    code, failed, _ = host_script.run("restore-host")
    assert code == 1 and failed["failed_step"] == "files" and failed["error"]["kind"] == "restore-failed"
    assert failed["error"]["message"].startswith("step files failed: ")
    assert failed["error"]["message"].endswith("; the services were left stopped (none installed)")
    assert "start-services" not in [s["step"] for s in failed["steps"]]
