"""The backup role's host script (templates/backup), rendered as Ansible renders it and run as the role runs it.

Used by tests/backup and the backup benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
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
