"""Backup throughput: the backup role's host script against plain restic on the same bytes.

A real slapd (qnprov_testing.slapd) with ``--accounts`` accounts, and ``--files`` message-sized
files (a quarantine-like directory) are backed up twice into fresh local repositories:

- ``qnprov-backup run`` (the role's script: slapcat -n 0/-n 1, file copies into the staging area,
  the manifest, restic backup, forget --prune);
- the floor: ``restic backup`` alone of the same staged bytes, no qnprov in front.

Then an incremental ``qnprov-backup run`` with nothing changed, and ``restic restore`` of the
snapshot (the restore floor; ``qnprov restore`` does not exist yet, so its ratio is not measured).
Mailboxes are not in this figure: dsync needs a Dovecot, which runs only on the lab host.

Usage: python benchmarks/backup_restore.py [--accounts N] [--files N] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # qnprov_testing, from the source tree

from goals import Goal, print_goals

from qnprov_testing.backup_script import render
from qnprov_testing.slapd import TestSlapd, running_test_slapd, ssha_hash

#: The host script may cost at most this multiple of plain restic on the same bytes.
RATIO_GOAL = 2.0
#: An incremental run with nothing changed, in seconds.
INCREMENTAL_GOAL = 15.0


def seed(server: TestSlapd, accounts: int) -> None:
    agency = f"ou=SKHCN,ou=agencies,{server.base_dn}"
    records = [f"dn: {agency}\nobjectClass: organizationalUnit\nou: SKHCN\n"]
    for n in range(accounts):
        cn = base64.b64encode(f"Nguyễn Văn {n}".encode()).decode()
        records.append(f"dn: uid=u{n:05d},{agency}\nobjectClass: inetOrgPerson\nuid: u{n:05d}\ncn:: {cn}\n"
                       f"sn: Nguyen\nmail: u{n:05d}@quangninh.test\nuserPassword: {ssha_hash(str(n))}\n")
    server.ldap_tool("ldapadd", input_text="\n".join(records))


def make_files(root: Path, count: int) -> int:
    root.mkdir()
    total = 0
    for n in range(count):
        body = os.urandom(6000).hex()  # incompressible, like attachments
        (root / f"{n:06d}.msg").write_text(f"Subject: message {n}\n\n{body}\n")
        total += len(body) + 24
    return total


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def measure(accounts: int, files: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="qnbackup-bench-"))
    try:
        password = work / "password"
        password.write_text("benchmark-password\n")
        script = work / "qnprov-backup"
        config_file = work / "config.json"
        script.write_text(render("qnprov-backup.py.j2", __backup_config_file=str(config_file)))
        file_bytes = make_files(work / "quarantine", files)
        with running_test_slapd(work) as server:
            seed(server, accounts)
            config = {"host": "bench", "repository": str(work / "repo"), "password_file": str(password),
                      "restic": shutil.which("restic"), "staging_dir": str(work / "staging"),
                      "state_dir": str(work / "state"), "retention": {"daily": 7, "weekly": 4, "monthly": 6},
                      "ldap": {"enabled": True, "config_dir": str(server.workdir / "slapd.d")},
                      "mail": {"enabled": False}, "files": [{"name": "quarantine", "path": str(work / "quarantine")}],
                      "audit_dir": "", "require_separate_fs": False}
            config_file.write_text(json.dumps(config))
            run = [sys.executable, str(script)]
            subprocess.run([*run, "init"], check=True, capture_output=True)
            first = timed([*run, "run"], dict(os.environ))
            incremental = timed([*run, "run"], dict(os.environ))
        staged = sum(p.stat().st_size for p in (work / "staging").rglob("*") if p.is_file())
        floor_env = {**os.environ, "RESTIC_REPOSITORY": str(work / "floor-repo"),
                     "RESTIC_PASSWORD_FILE": str(password), "RESTIC_CACHE_DIR": str(work / "floor-cache")}
        subprocess.run(["restic", "init"], env=floor_env, check=True, capture_output=True)
        floor = timed(["restic", "backup", "--host", "bench", str(work / "staging")], floor_env)
        restore = timed(["restic", "restore", "latest", "--target", str(work / "restored")], floor_env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = staged / 2**20
    return {"accounts": accounts, "files": files, "file_bytes": file_bytes, "staged_bytes": staged,
            "qnprov_backup_seconds": round(first, 2), "restic_floor_seconds": round(floor, 2),
            "qnprov_mib_per_s": round(mib / first, 1), "floor_mib_per_s": round(mib / floor, 1),
            "ratio": round(first / floor, 2), "incremental_seconds": round(incremental, 2),
            "restore_floor_seconds": round(restore, 2), "restore_floor_mib_per_s": round(mib / restore, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.accounts, args.files)
    goals = [Goal("backup time against plain restic on the same bytes", result["ratio"], RATIO_GOAL, "x"),
             Goal("incremental backup with no change", result["incremental_seconds"], INCREMENTAL_GOAL, "s")]
    if args.json:
        print(json.dumps({**result, "goals": [goal.as_dict() for goal in goals]}, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
        print_goals(goals)
    return 0 if all(goal.met for goal in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
