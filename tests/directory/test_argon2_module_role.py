"""The openldap role's tasks/argon2_module.yml, run by Ansible on this machine as both controller and host.

The module is built on the controller, copied with its checksum, and checked with
slaptest before cn=config names it; a second converge changes nothing (the build is
byte-for-byte reproducible). Paths are redirected into the test's directory, and the
check runs as the current user instead of openldap.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qnprov import paths
from qnprov_testing.slapd import argon2_module

pytestmark = pytest.mark.slapd

ROLE = paths.ROLES_DIR / "openldap"


def _converge(tmp_path: Path, module_args: str = "m=19456 t=2 p=1") -> tuple[int, dict[str, Any]]:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    # Extra vars: they outrank the role's vars file, so nothing is written outside tmp_path.
    extra = {
        "role_path": str(ROLE),
        "__openldap_argon2_module": str(tmp_path / "lib" / "ldap" / "qnprov_argon2.so"),
        "__openldap_argon2_check_conf": str(tmp_path / "qnprov_argon2.check.conf"),
        "__openldap_argon2_check_user": pwd.getpwuid(os.getuid()).pw_name,
        "__openldap_argon2_module_args": module_args,
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"directory": {"hosts": {"dir1": host}}}))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "directory", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": "The role's module tasks", "ansible.builtin.include_tasks": {
            "file": str(ROLE / "tasks" / "argon2_module.yml")}}],
        "handlers": [{"name": "Restart slapd", "ansible.builtin.debug": {"msg": "slapd would restart"}}],
    }]))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
         str(tmp_path / "play.yml"), "-e", json.dumps(extra)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300)
    report = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else {}
    assert report, result.stderr[-2000:]
    return result.returncode, report


def _task_result(report: dict[str, Any], name: str) -> dict[str, Any]:
    for play in report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == name:
                return dict(next(iter(task["hosts"].values())))
    raise AssertionError(f"no task {name!r} in the report")


def test_module_is_built_copied_checked_and_converges(tmp_path: Path) -> None:
    rc, report = _converge(tmp_path)
    assert rc == 0, json.dumps(report)[-3000:]
    installed = tmp_path / "lib" / "ldap" / "qnprov_argon2.so"
    # The same bytes as an independent build of the same source, mode 0644.
    assert hashlib.sha256(installed.read_bytes()).digest() == hashlib.sha256(argon2_module().read_bytes()).digest()
    assert installed.stat().st_mode & 0o777 == 0o644
    copy = _task_result(report, "Install the argon2id module")
    assert copy["changed"] is True
    assert copy["checksum"] == hashlib.sha1(installed.read_bytes(), usedforsecurity=False).hexdigest()
    assert (tmp_path / "qnprov_argon2.check.conf").read_text().splitlines()[-2:] == [
        f"moduleload {installed} m=19456 t=2 p=1", "password-hash {ARGON2}"]
    assert _task_result(report, "Check that slapd loads the module and hashes with it")["rc"] == 0
    build_dir = _task_result(report, "Make a build directory on the controller")["path"]
    assert not Path(build_dir).exists()  # nothing left on the controller
    assert report["stats"]["dir1"]["changed"] >= 2

    rc, again = _converge(tmp_path)
    assert rc == 0
    assert again["stats"]["dir1"]["changed"] == 0, again["stats"]


def test_weak_parameters_stop_the_play_before_cn_config(tmp_path: Path) -> None:
    rc, report = _converge(tmp_path, module_args="m=4096 t=3 p=1")
    assert rc != 0
    check = _task_result(report, "Check that slapd loads the module and hashes with it")
    assert check.get("failed") is True
    assert "m=4096 t=3 p=1 is below m>=19456 t>=2 p=1" in check["stderr"]
    assert report["stats"]["dir1"]["failures"] == 1
