"""Package installs are grouped: no role installs its packages one apt call per package (issue 15).

Every module invocation costs a round trip to the host; a loop of single-package apt
calls pays it once per package and runs dpkg's locking and cache reading each time.
The apt module takes a list, so a role installs its packages in one call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
PACKAGE_MODULES = frozenset({"apt", "ansible.builtin.apt", "ansible.legacy.apt", "package",
                             "ansible.builtin.package", "ansible.legacy.package"})
LOOP_KEYS = ("loop", "with_items", "with_list", "with_flattened")
#: A name that is only the loop variable: one package per invocation.
SINGLE_ITEM = re.compile(r"^\{\{\s*(item|[A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
#: Task keys that hold further tasks.
BLOCK_KEYS = ("block", "rescue", "always")


def iter_tasks(tasks: Any) -> Iterator[dict[str, Any]]:
    """Every task of a task file, blocks opened."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in BLOCK_KEYS:
            yield from iter_tasks(task.get(key))


def package_module_args(task: dict[str, Any]) -> dict[str, Any] | None:
    for module in PACKAGE_MODULES:
        if module in task:
            args = task[module]
            if isinstance(args, str):  # free form: name={{ item }} state=present
                return dict(part.split("=", 1) for part in re.findall(r"\w+=\{\{[^}]*\}\}|\w+=\S+", args))
            return args if isinstance(args, dict) else {}
    return None


def loop_var(task: dict[str, Any]) -> str:
    control = task.get("loop_control") or {}
    return str(control.get("loop_var", "item"))


def per_package_loops(tasks: Any) -> list[str]:
    """Names of the package tasks that loop one package per invocation."""
    found = []
    for task in iter_tasks(tasks):
        args = package_module_args(task)
        if args is None or not any(key in task for key in LOOP_KEYS):
            continue
        name = args.get("name", args.get("pkg", args.get("package")))
        match = SINGLE_ITEM.match(name.strip()) if isinstance(name, str) else None
        if match and match[1] == loop_var(task):
            found.append(str(task.get("name", "(unnamed)")))
    return found


def package_installs(tasks: Any) -> list[str]:
    """Names of the package tasks that install packages (they name some)."""
    return [str(task.get("name", "(unnamed)")) for task in iter_tasks(tasks)
            if (args := package_module_args(task)) is not None
            and any(k in args for k in ("name", "pkg", "package", "deb"))
            and args.get("state", "present") in ("present", "latest", "installed")]


def task_files() -> list[Path]:
    return sorted(ROLES.glob("*/tasks/*.yml"))


def test_the_check_finds_the_task_files() -> None:
    assert len(task_files()) > 20
    assert {p.parts[-3] for p in task_files()} >= {"common", "os_hardening", "postfix", "dovecot", "rspamd",
                                                   "openldap"}


@pytest.mark.parametrize("task_file", task_files(), ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_no_role_installs_packages_one_per_loop_item(task_file: Path) -> None:
    tasks = yaml.safe_load(task_file.read_text(encoding="utf-8"))
    assert per_package_loops(tasks) == [], f"{task_file}: install the list in one apt call"


def test_each_role_installs_its_packages_in_one_call() -> None:
    per_role: dict[str, list[str]] = {}
    for task_file in task_files():
        tasks = yaml.safe_load(task_file.read_text(encoding="utf-8"))
        per_role.setdefault(task_file.parts[-3], []).extend(
            f"{task_file.name}: {name}" for name in package_installs(tasks))
    assert per_role["postfix"], "the check found no package install in the postfix role"
    several = {role: names for role, names in per_role.items() if len(names) > 1}
    assert several == {}, f"roles with more than one apt install task: {several}"


@pytest.mark.parametrize(("snippet", "flagged"), [
    ("- name: one by one\n  ansible.builtin.apt:\n    name: '{{ item }}'\n  loop: [a, b]\n", True),
    ("- name: free form\n  apt: name={{ item }} state=present\n  with_items: [a, b]\n", True),
    ("- name: old style\n  apt:\n    name: '{{ item }}'\n  with_items: [a, b]\n", True),
    ("- name: renamed\n  ansible.builtin.package:\n    name: '{{ pkg }}'\n  loop: [a]\n"
     "  loop_control:\n    loop_var: pkg\n", True),
    ("- block:\n    - name: nested\n      ansible.builtin.apt:\n        name: '{{ item }}'\n"
     "      loop: [a, b]\n", True),
    ("- name: grouped\n  ansible.builtin.apt:\n    name: [a, b]\n", False),
    ("- name: a loop over lists of packages\n  ansible.builtin.apt:\n    name: '{{ item.packages }}'\n"
     "  loop: '{{ groups_of_packages }}'\n", False),
])
def test_the_detector_on_snippets(snippet: str, flagged: bool) -> None:
    assert bool(per_package_loops(yaml.safe_load(snippet))) is flagged
