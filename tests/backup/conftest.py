"""The backup role's host script, rendered from its template and run as the role runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
from ansible.plugins.filter.core import FilterModule

from qnprov import paths

TEMPLATES = paths.TEMPLATES_DIR / "backup"


def render(template: str, **variables: Any) -> str:
    """A template of templates/backup as Ansible's template module renders it (trim_blocks)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, autoescape=False)  # noqa: S701
    ansible_filters = FilterModule().filters()  # Ansible's own bool and to_nice_json
    env.filters.update({name: ansible_filters[name] for name in ("bool", "to_nice_json")})
    return env.get_template(template).render(**variables)


@dataclass
class HostScript:
    """qnprov-backup rendered into ``root``, with a config file the tests can change."""

    root: Path
    script: Path
    config_file: Path
    config: dict[str, Any]

    def write_config(self, **changes: Any) -> None:
        self.config.update(changes)
        self.config_file.write_text(json.dumps(self.config))

    def run(self, *args: str, config: Path | None = None) -> tuple[int, dict[str, Any], str]:
        """(exit code, the JSON document, stderr) of ``qnprov-backup ARGS --json``."""
        argv = [sys.executable, str(self.script), *args, "--json"]
        if config is not None:
            argv += ["--config", str(config)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"no JSON from qnprov-backup {args}: {done.stdout!r} {done.stderr!r}"
        return done.returncode, json.loads(lines[-1]), done.stderr


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
