"""The backup role's templates as the role renders them, and the host script's pure parts."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from qnprov import paths
from qnprov_testing.backup_script import HostScript, render

DEFAULTS = yaml.safe_load((paths.ROLES_DIR / "backup" / "defaults" / "main.yml").read_text())


def role_vars(**changes: object) -> dict[str, object]:
    """The role's defaults with the values Ansible computes for a directory-only host."""
    values = {**DEFAULTS, "backup_host": "ldap1", "backup_repository": "sftp:backup@vault.example:/srv/restic",
              "backup_directory": True, "backup_mailboxes": False, "backup_vmail_user": "vmail",
              "backup_audit_dir": "/var/log/qnprov/audit",
              "backup_files": [{"name": "tls", "path": "/etc/qnprov/tls"}],
              "__backup_password_file": "/etc/qnprov/backup/restic-password",
              "__backup_env_file": "/etc/qnprov/backup/restic.env"}
    values.update(changes)
    return values


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_loader("qnprov_backup_script", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)  # noqa: S102 - the rendered template
    return module


def test_the_config_carries_the_role_variables() -> None:
    text = render("config.json.j2", **role_vars(backup_password="vault-secret-91d2"))
    config = json.loads(text)
    assert config["host"] == "ldap1"
    assert config["repository"] == "sftp:backup@vault.example:/srv/restic"
    assert config["password_file"] == "/etc/qnprov/backup/restic-password"
    assert config["env_file"] == ""  # no backend credentials configured
    assert config["require_separate_fs"] is True
    assert config["retention"] == {"daily": 7, "weekly": 4, "monthly": 6}
    assert config["ldap"] == {"enabled": True, "slapcat": "/usr/sbin/slapcat", "slapadd": "/usr/sbin/slapadd",
                              "config_dir": "/etc/ldap/slapd.d", "owner": "openldap"}
    # restore --host: the services it stops and starts, and the milter venv's audit verify.
    assert config["restore_services"] == ["slapd", "dovecot", "qnprov-milter", "postfix"]
    assert config["audit_verify"] == ["/opt/qnprov/venv/bin/python", "-m", "qnprov.policy.milter_cli", "audit",
                                      "verify"]
    assert config["mail"]["enabled"] is False
    assert config["staging_dir"] == "/var/backups/qnprov/staging" and config["check_subset"] == "5%"
    assert "vault-secret-91d2" not in text  # the password is only in its own 0600 file


def test_s3_credentials_go_to_the_env_file_only() -> None:
    variables = role_vars(backup_repository="s3:https://s3.example/bucket/qnprov",
                          backup_repository_env={"AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_ACCESS_KEY_ID": "AK"})
    config = render("config.json.j2", **variables)
    assert json.loads(config)["env_file"] == "/etc/qnprov/backup/restic.env"
    assert "s3cr3t" not in config
    assert render("restic.env.j2", **variables) == "AWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY=s3cr3t\n"


def test_the_units_schedule_daily_with_an_alert_on_failure() -> None:
    service = render("qnprov-backup.service.j2", **role_vars())
    assert "ExecStart=/usr/local/sbin/qnprov-backup run\n" in service
    assert "OnFailure=qnprov-backup-failed.service\n" in service
    assert "IOSchedulingClass=idle\n" in service and "TimeoutStartSec=6h\n" in service
    timer = render("qnprov-backup.timer.j2", **role_vars())
    assert "OnCalendar=*-*-* 01:30:00\n" in timer and "Persistent=true\n" in timer
    assert "RandomizedDelaySec=30min\n" in timer
    failed = render("qnprov-backup-failed.service.j2", **role_vars(backup_alert_mail_to="postmaster@quangninh.test"))
    assert "ExecStart=/usr/local/sbin/qnprov-backup alert\n" in failed
    assert "mail to postmaster@quangninh.test" in failed


def test_the_script_names_restics_errors(host_script: HostScript) -> None:
    script = load_script(host_script.script)
    assert str(host_script.config_file) == script.CONFIG_FILE
    wrong = script.classify_restic("Fatal: wrong password or no key found\n", "/srv/repo")
    assert (wrong.kind, str(wrong)) == ("wrong-password",
                                         "the repository password is wrong: no key in /srv/repo opens with it")
    missing = script.classify_restic("Fatal: unable to open config file: stat /srv/repo/config: no such file or "
                                     "directory\nIs there a repository at the following location?\n/srv/repo",
                                     "/srv/repo")
    assert missing.kind == "missing-repository"
    other = script.classify_restic("Fatal: unable to create lock in backend: repository is already locked", "r")
    assert other.kind == "locked"
    assert script.classify_restic("Fatal: something new\n", "r").kind == "restic"


def test_mailboxes_are_copied_with_doveadm_backup_never_a_tar(host_script: HostScript, tmp_path: Path) -> None:
    """The mail step against a recording doveadm: which calls the script makes, for which users."""
    calls = tmp_path / "calls"
    homes = tmp_path / "homes"
    (homes / "an" / "sieve").mkdir(parents=True)
    (homes / "an" / "sieve" / "vacation.sieve").write_text('require "vacation";\n')
    fake = tmp_path / "doveadm"
    fake.write_text(f"""#!{sys.executable}
import os, sys
open({str(calls)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args == ["user", "*"]:
    print("an@quangninh.test\\nbinh@quangninh.test\\n; rm -rf /\\n")
elif args[:2] == ["user", "-f"]:
    print({str(homes)!r} + "/" + args[3].split("@")[0])
elif args[0] == "backup":
    target = args[-1].split(":", 1)[1]
    os.makedirs(target + "/cur", exist_ok=True)
    open(target + "/cur/1.msg", "w").write("x")
    if args[2].startswith("binh") and not os.path.exists(target + "/retried"):
        open(target + "/retried", "w").close()
        sys.exit(2)  # dsync: "mail changed during the sync, run again"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    staging = Path(host_script.config["staging_dir"])
    (staging / "mail" / "gone@quangninh.test").mkdir(parents=True)
    host_script.write_config(mail={"enabled": True, "doveadm": str(fake), "vmail_user": "root"})
    script = load_script(host_script.script)
    found = script.stage_mail(host_script.config, str(staging))
    assert sorted(found) == ["an@quangninh.test", "binh@quangninh.test"]  # the odd line is not an address
    assert found["an@quangninh.test"]["messages"] == 1
    assert found["an@quangninh.test"]["sieve"] == {"vacation.sieve": script.sha256_file(
        str(homes / "an" / "sieve" / "vacation.sieve"))}
    assert not (staging / "mail" / "gone@quangninh.test").exists()  # a deleted user leaves the staging area
    lines = calls.read_text().splitlines()
    assert f"backup -u an@quangninh.test maildir:{staging}/mail/an@quangninh.test" in lines
    binh = f"backup -u binh@quangninh.test maildir:{staging}/mail/binh@quangninh.test"
    assert lines.count(binh) == 2  # exit 2 from dsync: synced once more
    assert lines.count(f"backup -u an@quangninh.test maildir:{staging}/mail/an@quangninh.test") == 1
    assert not any("tar" in line or "rm" in line for line in lines)


def test_the_failure_alert_logs_at_err_and_mails(host_script: HostScript, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!/bin/sh\necho \"$@\" > {outbox}.args\ncat > {outbox}\n")
    sendmail.chmod(0o755)
    state = Path(host_script.config["state_dir"])
    state.mkdir(mode=0o700)
    (state / "last-run.json").write_text(json.dumps({"ok": False, "error": {
        "kind": "wrong-password", "message": "the repository password is wrong: no key in /r opens with it"}}))
    host_script.write_config(alert_mail_to="postmaster@quangninh.test", sendmail=str(sendmail))
    done = subprocess.run([sys.executable, str(host_script.script), "alert"], capture_output=True, text=True,
                          check=False, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("<3>qnprov-backup failed on mail1: the repository password is wrong: "
                           "no key in /r opens with it\n")
    mail = outbox.read_text()
    assert mail.startswith("To: postmaster@quangninh.test\nSubject: [qnprov] backup failed on mail1\n")
    assert (tmp_path / "outbox.args").read_text().strip() == "-t -oi"
