"""Start the host script on the inventory's hosts through Ansible and collect their reports."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from qnprov import paths, runner
from qnprov.backup.reports import ACTIONS, HostReport, read_reports
from qnprov.errors import InputError

OPS_PLAYBOOK = paths.PLAYBOOKS_DIR / "backup_ops.yml"


def run_action(inventory: Path, action: str, *, limit: str | None = None, snapshot: str | None = None,
               vault_password_file: Path | None = None,
               args: list[str] | None = None) -> tuple[dict[str, HostReport], runner.PlaybookResult]:
    """``action`` (run, list, verify or restore-mailbox) on every host ``limit`` selects; one report per host.

    ``args`` are more of the host script's arguments, each one ``--option=value`` token.
    """
    if action not in ACTIONS:
        raise InputError(f"unknown backup action {action!r}; choose one of {', '.join(ACTIONS)}")
    if snapshot is not None and (not snapshot or not all(c in "0123456789abcdef" for c in snapshot)):
        raise InputError(f"snapshot id {snapshot!r} is not a restic id (hexadecimal)")
    workdir = Path(tempfile.mkdtemp(prefix="qnprov-backup-"))
    os.chmod(workdir, 0o700)
    try:
        fetch_dir = workdir / "reports"
        fetch_dir.mkdir(mode=0o700)
        extravars = workdir / "vars.json"
        variables = {"qnprov_backup_action": action, "qnprov_backup_fetch_dir": str(fetch_dir),
                     "qnprov_backup_snapshot": snapshot or "",
                     "qnprov_backup_args": list(args or [])}
        fd = os.open(extravars, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(variables, handle)
        result = runner.run_playbook(OPS_PLAYBOOK, inventory=inventory, limit=limit, extravars_files=[extravars],
                                     vault_password_file=vault_password_file)
        failures = {f.host: f"{f.task}: {f.message}" for f in result.failures if f.host != "-"}
        reports = read_reports(fetch_dir, sorted(result.hosts), failures)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return reports, result
