"""The os_hardening role's one-invocation cron permission fix (issue 15).

A stat and a file task per cron path became one shell script (roles/os_hardening/vars/
main.yml). These run that very script on temp paths: check mode names what it would
change and changes nothing; apply makes each existing directory 0700 and file 0600,
root:root, names exactly those it changed, and leaves missing paths alone; a second
apply names nothing (the task then reports no change).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

VARS = Path(__file__).resolve().parents[2] / "roles" / "os_hardening" / "vars" / "main.yml"
SCRIPT = yaml.safe_load(VARS.read_text(encoding="utf-8"))["_os_hardening_cron_script"]


def run(mode: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", SCRIPT, "cron-perms", mode, *map(str, paths)],
                          capture_output=True, text=True, timeout=30, check=True)


def test_check_then_apply_then_nothing_left(tmp_path: Path) -> None:
    assert os.getuid() == 0, "the script chowns to root: run as root, as the role does"
    loose_dir, loose_file, tight_dir, missing = (tmp_path / "cron.daily", tmp_path / "crontab",
                                                 tmp_path / "cron.d", tmp_path / "cron.weekly")
    loose_dir.mkdir(mode=0o755)
    loose_dir.chmod(0o755)
    loose_file.write_text("# m h dom mon dow user command\n")
    loose_file.chmod(0o644)
    tight_dir.mkdir()
    tight_dir.chmod(0o700)
    paths = (loose_file, tight_dir, loose_dir, missing)

    preview = run("check", *paths)
    assert preview.stdout.splitlines() == [str(loose_file), str(loose_dir)]
    assert (loose_dir.stat().st_mode & 0o777, loose_file.stat().st_mode & 0o777) == (0o755, 0o644)

    applied = run("apply", *paths)
    assert applied.stdout.splitlines() == [str(loose_file), str(loose_dir)]
    assert (loose_dir.stat().st_mode & 0o777, loose_file.stat().st_mode & 0o777) == (0o700, 0o600)
    assert (tight_dir.stat().st_mode & 0o777) == 0o700
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (loose_dir, loose_file, tight_dir)} == {(0, 0)}
    assert not missing.exists()

    assert run("apply", *paths).stdout == ""
