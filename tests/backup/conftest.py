"""Fixtures for the backup tests: the host script in a temporary directory, with a config to change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qnprov_testing.backup_script import HostScript, render


@pytest.fixture
def host_script(tmp_path: Path) -> HostScript:
    script = tmp_path / "qnprov-backup"
    config_file = tmp_path / "config.json"
    script.write_text(render("qnprov-backup.py.j2", __backup_config_file=str(config_file)))
    password = tmp_path / "restic-password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    config = {"host": "mail1", "repository": str(tmp_path / "repo"), "password_file": str(password),
              "env_file": "", "restic": shutil.which("restic") or "/usr/bin/restic",
              "staging_dir": str(tmp_path / "staging"), "state_dir": str(tmp_path / "state"),
              "scratch_dir": str(tmp_path / "state" / "verify"), "check_subset": "100%",
              "retention": {"daily": 7, "weekly": 4, "monthly": 6},
              "ldap": {"enabled": False}, "mail": {"enabled": False}, "files": [], "audit_dir": "",
              "alert_mail_to": "",
              # The tests' repository and staging area share tmp's file system; the check itself
              # is tested on its own (test_a_repository_on_the_hosts_own_disk_is_refused).
              "require_separate_fs": False}
    host = HostScript(tmp_path, script, config_file, config)
    host.write_config()
    return host
