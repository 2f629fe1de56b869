"""The qnprov_files action and module (plugins/): a set of templates in one module call.

Real ``ansible-playbook`` runs with the project's ansible.cfg on localhost (local
connection) into a temp dir, results read from the json callback: rendering with
per-file vars, idempotence, order and validation (a failing file stops the list, is
not installed, and nothing after it is touched), owner/mode enforcement, check mode,
and --diff that leaves out the files marked ``diff: false``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from qnprov import paths

SECRET = "s3cret-redis-password-7f1"


def _play(tmp: Path, files: list[dict[str, Any]], **task: Any) -> Path:
    (tmp / "templates").mkdir(exist_ok=True)
    (tmp / "templates" / "module.conf.j2").write_text("# {{ name }}\nenabled = {{ enabled | lower }};\n")
    (tmp / "templates" / "secret.conf.j2").write_text("password = \"{{ secret }}\";\n")
    play = [{"hosts": "localhost", "gather_facts": False,
             "vars": {"enabled": False, "secret": SECRET},
             "tasks": [{"name": "Install the files", "qnprov_files": {"files": files, **task}}]}]
    path = tmp / "play.yml"
    path.write_text(yaml.safe_dump(play))
    return path


def _run(play: Path, *flags: str) -> tuple[dict[str, Any], str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(paths.ANSIBLE_CFG), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(play), *flags],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    out = proc.stdout
    report = json.loads(out[out.index("{"):])
    return report["plays"][0]["tasks"][0]["hosts"]["localhost"], out


def _me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def _files(tmp: Path, validate_b: str | None = None) -> list[dict[str, Any]]:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    b: dict[str, Any] = {"src": "module.conf.j2", "dest": str(out / "b.conf"), "vars": {"name": "b", "enabled": True}}
    if validate_b:
        b["validate"] = validate_b
    return [
        {"src": "module.conf.j2", "dest": str(out / "a.conf"), "vars": {"name": "a"}},
        b,
        {"src": "secret.conf.j2", "dest": str(out / "c.conf"), "diff": False},
    ]


def test_renders_installs_and_is_idempotent(tmp_path: Path) -> None:
    owner, group = _me()
    # The default validate runs on every candidate: it must see the candidate's text.
    check = "/bin/sh -c 'grep -q \";\" \"$1\"' validate %s"
    play = _play(tmp_path, _files(tmp_path), owner=owner, group=group, mode="0640", validate=check)
    first, _ = _run(play)
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert [r["changed"] for r in first["results"]] == [True, True, True]
    out = tmp_path / "out"
    assert (out / "a.conf").read_text() == "# a\nenabled = false;\n"
    assert (out / "b.conf").read_text() == "# b\nenabled = true;\n"
    assert (out / "c.conf").read_text() == f'password = "{SECRET}";\n'
    assert {oct((out / n).stat().st_mode & 0o777) for n in ("a.conf", "b.conf", "c.conf")} == {"0o640"}

    second, _ = _run(play)
    assert second["changed"] is False
    assert [r["changed"] for r in second["results"]] == [False, False, False]

    # A mode drift alone is put back and reported.
    (out / "b.conf").chmod(0o644)
    third, _ = _run(play)
    assert [r["changed"] for r in third["results"]] == [False, True, False]
    assert (out / "b.conf").stat().st_mode & 0o777 == 0o640


def test_a_failing_validator_stops_the_list_before_its_file_goes_live(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.conf").write_text("old b\n")
    reject = "/bin/sh -c 'exit 3' validate %s"
    play = _play(tmp_path, _files(tmp_path, validate_b=reject), mode="0640")
    result, _ = _run(play)
    assert result["failed"] is True
    assert "failed to validate" in result["msg"] and result["msg"].endswith("b.conf")
    assert result["exit_status"] == 3
    # a (before b) is live, b kept its old text, c (after b) was never written.
    assert (out / "a.conf").read_text() == "# a\nenabled = false;\n"
    assert (out / "b.conf").read_text() == "old b\n"
    assert not (out / "c.conf").exists()
    assert [r["dest"] for r in result["results"]] == [str(out / "a.conf")]


def test_check_mode_writes_nothing_and_diff_leaves_out_secret_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.conf").write_text("# a\nenabled = yes;\n")
    (out / "c.conf").write_text('password = "old-password";\n')
    play = _play(tmp_path, _files(tmp_path), mode="0600")
    result, stdout = _run(play, "--check", "--diff")
    assert result["changed"] is True
    assert [r["changed"] for r in result["results"]] == [True, True, True]
    # Nothing written in check mode.
    assert (out / "a.conf").read_text() == "# a\nenabled = yes;\n"
    assert not (out / "b.conf").exists()
    assert (out / "c.conf").read_text() == 'password = "old-password";\n'
    # One diff per changed file whose diff is allowed: a and b, not c.
    assert [(d["before_header"], d["before"], d["after"]) for d in result["diff"]] == [
        (str(out / "a.conf"), "# a\nenabled = yes;\n", "# a\nenabled = false;\n"),
        (str(out / "b.conf"), "", "# b\nenabled = true;\n"),
    ]
    # Neither the old nor the new secret text appears anywhere in the output.
    assert SECRET not in stdout and "old-password" not in stdout
    assert {key for res in result["results"] for key in res} == {"dest", "changed", "content_changed"}
    assert "invocation" not in result


def test_remote_src_publishes_a_staged_copy_with_its_diff(tmp_path: Path) -> None:
    staged, live = tmp_path / "staging", tmp_path / "live"
    staged.mkdir()
    live.mkdir()
    (staged / "main.cf").write_text("myhostname = new\n")
    (staged / "map.cf").write_text(f"bind_pw = {SECRET}\n")
    (live / "main.cf").write_text("myhostname = old\n")
    files = [{"remote_src": str(staged / "main.cf"), "dest": str(live / "main.cf")},
             {"remote_src": str(staged / "map.cf"), "dest": str(live / "map.cf"), "diff": False}]
    play = _play(tmp_path, files, mode="0640")
    preview, stdout = _run(play, "--check", "--diff")
    assert [r["changed"] for r in preview["results"]] == [True, True]
    assert [(d["before"], d["after"]) for d in preview["diff"]] == [("myhostname = old\n", "myhostname = new\n")]
    assert SECRET not in stdout
    assert (live / "main.cf").read_text() == "myhostname = old\n" and not (live / "map.cf").exists()
    done, _ = _run(play)
    assert done["changed"] is True
    assert (live / "main.cf").read_text() == "myhostname = new\n"
    assert (live / "map.cf").read_text() == f"bind_pw = {SECRET}\n"
    again, _ = _run(play)
    assert again["changed"] is False
