"""Check inventory variables against the roles' argument specs before a run.

Ansible validates a role's arguments only when the play reaches that role,
which can be many minutes (and half a deployment) in. qnprov checks every
host's inventory variables up front, with Ansible's own validator, and turns
the first problem into one clear line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qnprov import inventory as inventory_mod
from qnprov import paths
from qnprov.errors import ConfigError


@dataclass(frozen=True)
class VariableProblem:
    host: str
    role: str
    variable: str
    message: str

    def line(self) -> str:
        return f"host {self.host}: {self.variable} ({self.role}): {self.message}"


def load_role_spec(role: str, roles_dir: Path = paths.ROLES_DIR) -> dict[str, Any]:
    """The ``main`` entry point's options of a role (empty when it has none)."""
    spec_file = roles_dir / role / "meta" / "argument_specs.yml"
    if not spec_file.is_file():
        return {}
    data = yaml.safe_load(spec_file.read_text()) or {}
    return dict(((data.get("argument_specs") or {}).get("main") or {}).get("options") or {})


def playbook_roles(playbook: Path) -> list[tuple[str, list[str]]]:
    """(host pattern, [role, ...]) for each play of a playbook, imports followed."""
    plays = yaml.safe_load(playbook.read_text()) or []
    found: list[tuple[str, list[str]]] = []
    for play in plays:
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            target = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
            found += playbook_roles((playbook.parent / target).resolve())
            continue
        roles = []
        for entry in play.get("roles", []) or []:
            roles.append(entry if isinstance(entry, str) else str(entry.get("role") or entry.get("name")))
        found.append((str(play.get("hosts", "all")), roles))
    return found


def check_variables(host: str, role: str, spec: Mapping[str, Any], hostvars: Mapping[str, Any],
                    prefixes: Iterable[str]) -> list[VariableProblem]:
    """Problems with one host's variables for one role (pure apart from Ansible's validator)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    problems: list[VariableProblem] = []
    for name in sorted(hostvars):
        if name in spec or not any(name.startswith(p) for p in prefixes):
            continue
        close = difflib.get_close_matches(name, list(spec), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(VariableProblem(host, role, name, f"not a variable of role {role}{hint}"))

    checked_spec: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name, option in spec.items():
        option = dict(option)
        option.pop("description", None)
        option.pop("version_added", None)
        option.pop("default", None)  # defaults live in defaults/main.yml
        if name in hostvars:
            option["required"] = False
            if inventory_mod.is_deferred(hostvars[name]):
                continue
            params[name] = inventory_mod.plain(hostvars[name])
        checked_spec[name] = _strip_descriptions(option)
    result = ArgumentSpecValidator(checked_spec).validate(params)
    for error in result.errors:
        text = str(error)
        variable = next((n for n in sorted(checked_spec, key=len, reverse=True) if n in text), "?")
        problems.append(VariableProblem(host, role, variable, text))
    return problems


def _strip_descriptions(option: dict[str, Any]) -> dict[str, Any]:
    sub = option.get("options")
    if isinstance(sub, dict):
        option["options"] = {k: _strip_descriptions({kk: vv for kk, vv in dict(v).items()
                                                     if kk not in {"description", "default"}})
                             for k, v in sub.items()}
    return option


def validate_inventory(inventory: Path, playbook: Path = paths.SITE_PLAYBOOK, *, limit: str | None = None,
                       extra_vars_files: Iterable[Path] = (), roles_dir: Path | None = None) -> list[VariableProblem]:
    """Every variable problem of every host the playbook would touch."""
    parsed = inventory_mod.load(inventory, extra_vars_files=extra_vars_files)
    limited = set(parsed.hosts_matching(limit)) if limit else None
    all_roles = sorted({r for _, roles in playbook_roles(playbook) for r in roles})
    problems: list[VariableProblem] = []
    for pattern, roles in playbook_roles(playbook):
        for host in parsed.hosts_matching(pattern):
            if limited is not None and host not in limited:
                continue
            for role in roles:
                spec = load_role_spec(role, roles_dir or paths.ROLES_DIR)
                # A role's prefix is its name; unknown names with that prefix are typos,
                # unless another role of the play owns them (e.g. qnprov_milter_*).
                others = [r for r in all_roles if r != role and r.startswith(role)]
                vars_for_role = {k: v for k, v in parsed.host_vars(host).items()
                                 if not any(k.startswith(o + "_") for o in others)}
                problems += check_variables(host, role, spec, vars_for_role, prefixes=[f"{role}_"])
    return problems


def require_valid_inventory(inventory: Path, playbook: Path = paths.SITE_PLAYBOOK, *, limit: str | None = None,
                            extra_vars_files: Iterable[Path] = (), roles_dir: Path | None = None) -> None:
    problems = validate_inventory(inventory, playbook, limit=limit, extra_vars_files=extra_vars_files,
                                  roles_dir=roles_dir)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{inventory.name}: {first.line()}{more}")
