"""The postfix role's one-invocation check of the staged configuration (issue 15).

Five tasks (postconf -n, the forged-header probe, the role-address probe, postfix check,
no private inet service) became one shell script in roles/postfix/vars/main.yml. These
run that very script against stand-in postconf/postmap/postfix programs whose answers
are set per test, and check that each check is judged as its own task judged it: a
clean set passes; each kind of fault fails the script and is named; every failing check
is reported, not only the first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

VARS = Path(__file__).resolve().parents[2] / "roles" / "postfix" / "vars" / "main.yml"
SCRIPT = yaml.safe_load(VARS.read_text(encoding="utf-8"))["__postfix_staged_check_script"]

# Each stand-in checks its arguments, then answers from files in $ANSWERS:
# <name>.out (stdout), <name>.err (stderr), <name>.rc (exit status).
STAND_IN = """#!/bin/sh
case "$*" in
  "-c {staging} -n") key=postconf-n ;;
  "-c {staging} -Fh */inet/private") key=postconf-F ;;
  "-c {staging} -q X-QN-Policy: accept regexp:{staging}/header_checks") key=postmap-header ;;
  "-c {staging} -q postmaster@quangninh.test texthash:{staging}/role_addresses") key=postmap-role ;;
  "-c {staging} check") key=postfix-check ;;
  *) echo "unexpected arguments: $*" >&2; exit 9 ;;
esac
a="{answers}/$key"
[ -f "$a.out" ] && cat "$a.out"
[ -f "$a.err" ] && cat "$a.err" >&2
exit "$(cat "$a.rc" 2>/dev/null || echo 0)"
"""

CLEAN = {"postconf-n.out": "myhostname = mail1\n", "postconf-F.out": "n\nn\nn\n",
         "postmap-header.out": "IGNORE\n", "postmap-role.out": "postmaster@quangninh.test\n"}


def run_check(tmp_path: Path, answers: dict[str, str], role_want: str = "postmaster@quangninh.test",
              ) -> subprocess.CompletedProcess[str]:
    staging, folder = tmp_path / "staging", tmp_path / "answers"
    staging.mkdir()
    folder.mkdir()
    for name, text in answers.items():
        (folder / name).write_text(text)
    tools = []
    for tool in ("postconf", "postmap", "postfix"):
        path = tmp_path / tool
        path.write_text(STAND_IN.format(staging=staging, answers=folder))
        path.chmod(0o755)
        tools.append(str(path))
    return subprocess.run(["/bin/sh", "-c", SCRIPT, "check", *tools, str(staging), "postmaster@quangninh.test",
                           role_want], capture_output=True, text=True, timeout=30, check=False)


def test_a_clean_staging_set_passes(tmp_path: Path) -> None:
    result = run_check(tmp_path, CLEAN)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_role_probe_is_skipped_without_a_recipient(tmp_path: Path) -> None:
    # No role recipient: the role_addresses answer does not matter (the old task's when:).
    result = run_check(tmp_path, {**CLEAN, "postmap-role.out": "somewhere@else\n"}, role_want="")
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(("answers", "named"), [
    ({"postconf-n.err": "postconf: warning: unused parameter: foo=bar\n"}, "postconf -n: exit 0: postconf: warning"),
    ({"postconf-n.rc": "1", "postconf-n.err": "fatal: bad main.cf\n"}, "postconf -n: exit 1: fatal: bad main.cf"),
    ({"postmap-header.out": "DUNNO\n"}, "header_checks: exit 0: a forged verdict header gives 'DUNNO'"),
    ({"postmap-role.out": "nobody@quangninh.test\n"}, "role_addresses: exit 0: postmaster@quangninh.test gives"),
    ({"postmap-role.rc": "1", "postmap-role.out": ""}, "role_addresses: exit 1"),
    ({"postfix-check.err": "postfix/postfix-script: warning: group or other writable\n"}, "postfix check: exit 0"),
    ({"postfix-check.rc": "1"}, "postfix check: exit 1"),
    ({"postconf-F.out": "n\ny\nn\n"}, "master.cf: exit 0: an inet service is private"),
    ({"postconf-F.rc": "1", "postconf-F.err": "fatal: bad master.cf\n"}, "master.cf: exit 1"),
])
def test_each_fault_fails_and_is_named(tmp_path: Path, answers: dict[str, str], named: str) -> None:
    result = run_check(tmp_path, {**CLEAN, **answers})
    assert result.returncode == 1
    assert named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_every_failing_check_is_named(tmp_path: Path) -> None:
    result = run_check(tmp_path, {**CLEAN, "postconf-n.rc": "1", "postmap-header.out": "OK\n",
                                  "postconf-F.out": "y\n"})
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stderr.strip().splitlines()] == [
        "postconf -n", "header_checks", "master.cf"]
