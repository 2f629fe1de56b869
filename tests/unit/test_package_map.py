"""The "must not import" column of the package map in docs/design.md, checked on every module.

Every ``import`` and ``from ... import`` anywhere in a module counts, function-level
ones included: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from qnprov import paths

PACKAGE = paths.PROJECT_ROOT / "qnprov"

#: (room, forbidden targets, allowed exceptions). A room or target ending in "." is a
#: package prefix; otherwise it names one module. The order follows docs/design.md.
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("qnprov.errors", ("qnprov.",), ()),
    ("qnprov.paths", ("qnprov.",), ("qnprov.errors",)),
    ("qnprov.dns", ("qnprov.",), ("qnprov.errors",)),
    ("qnprov.inventory", ("qnprov.lab", "qnprov.directory.", "qnprov.policy.", "qnprov.controls.", "qnprov.push.",
                          "qnprov.cli"), ()),
    ("qnprov.runner", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.ui", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.testbed", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.freshstage", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.lab", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.labcheck", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    # The drills use `qnprov store` as an operator does: a subprocess, not an import.
    ("qnprov.labclient", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls.", "qnprov.stores."), ()),
    ("qnprov.labstream", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls.", "qnprov.stores."), ()),
    ("qnprov.labdrill", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls.", "qnprov.stores."), ()),
    ("qnprov.argspec", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.topology", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.roledocs", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls."), ()),
    ("qnprov.directory.", ("qnprov.controls.", "qnprov.testbed", "qnprov.runner", "qnprov.policy.",
                           "qnprov.reporting."), ("qnprov.policy.domains",)),
    ("qnprov.stores.", ("qnprov.controls.", "qnprov.policy.", "qnprov.lab", "qnprov.testbed"), ()),
    ("qnprov.policy.", ("qnprov.directory.", "qnprov.controls.", "qnprov.lab", "qnprov.testbed", "qnprov.runner",
                        "qnprov.inventory", "qnprov.argspec", "qnprov.reporting.", "qnprov.push."), ()),
    ("qnprov.reporting.", ("qnprov.controls.", "qnprov.lab", "qnprov.testbed", "qnprov.freshstage",
                           "qnprov.policy."), ("qnprov.policy.audit",)),
    ("qnprov.backup.", ("qnprov.directory.", "qnprov.policy.", "qnprov.controls.", "qnprov.lab", "qnprov.testbed"),
     ()),
    ("qnprov.push.", ("qnprov.directory.", "qnprov.controls.", "qnprov.lab", "qnprov.testbed", "qnprov.runner",
                      "qnprov.policy."), ("qnprov.policy.milter.blocklist",)),
]
#: No module of qnprov imports from these.
NOWHERE = ("qnprov_testing",)
#: Only the root CLI mounts the rooms' CLI modules.
CLI_IMPORTERS = ("qnprov.cli", "qnprov.__main__")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str) -> set[str]:
    """Every absolute name a source imports: ``import a.b`` gives ``a.b``, ``from a import b``
    gives ``a.b`` (``b`` may be a module, ``from qnprov import lab``, or a name in ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def matches(name: str, pattern: str) -> bool:
    if pattern.endswith("."):
        return name.startswith(pattern) or name == pattern[:-1]
    return name == pattern or name.startswith(pattern + ".")


def cli_module(name: str) -> str | None:
    """The CLI module ``name`` is or lies in (``qnprov.policy.cli.policy_app`` -> ``qnprov.policy.cli``)."""
    parts = name.split(".")
    for end in range(2, len(parts) + 1):
        if parts[0] == "qnprov" and (parts[end - 1] == "cli" or parts[end - 1].endswith("_cli")):
            return ".".join(parts[:end])
    return None


def violations(modules: dict[str, str]) -> list[str]:
    problems = []
    for name, source in sorted(modules.items()):
        imported = imports_of(source)
        for room, forbidden, allowed in RULES:
            if not matches(name, room):
                continue
            for target in sorted(imported):
                if target.startswith("qnprov") and any(matches(target, f) for f in forbidden) \
                        and not any(matches(target, a) for a in allowed) and not matches(target, name):
                    problems.append(f"{name} imports {target} (room {room})")
        problems.extend(f"{name} imports {target}" for target in sorted(imported)
                        if any(matches(target, n) for n in NOWHERE))
        if not any(matches(name, importer) for importer in CLI_IMPORTERS):
            clis = {cli_module(target) for target in imported} - {None, cli_module(name)}
            problems.extend(f"{name} imports the CLI module {target}" for target in sorted(clis))
    return problems


def package_modules(root: Path = PACKAGE) -> dict[str, str]:
    return {module_name(path, root): path.read_text(encoding="utf-8") for path in sorted(root.rglob("*.py"))}


def test_the_package_keeps_to_its_map() -> None:
    modules = package_modules()
    assert {"qnprov.dns", "qnprov.policy.engine", "qnprov.directory.planner", "qnprov.controls.verify"} <= set(modules)
    assert violations(modules) == []


def test_a_forbidden_import_is_named_with_its_room() -> None:
    modules = {
        "qnprov.policy.engine": "def load():\n    from qnprov.directory import ldapio\n",
        "qnprov.directory.sync": "from qnprov.policy.domains import is_freemail\nfrom qnprov.policy import engine\n",
        "qnprov.dns": "from qnprov import lab\nfrom qnprov.errors import ConfigError\n",
        "qnprov.lab": "import qnprov_testing.slapd\n",
        "qnprov.paths": "def f():\n    from qnprov.errors import ConfigError\n    from qnprov import runner\n",
        "qnprov.controls.verify": "from qnprov.policy.cli import policy_app\n",
        "qnprov.cli": "from qnprov.policy.cli import policy_app\n",
    }
    assert violations(modules) == [
        "qnprov.controls.verify imports the CLI module qnprov.policy.cli",
        "qnprov.directory.sync imports qnprov.policy.engine (room qnprov.directory.)",
        "qnprov.dns imports qnprov.lab (room qnprov.dns)",
        "qnprov.lab imports qnprov_testing.slapd",
        "qnprov.paths imports qnprov.runner (room qnprov.paths)",
        "qnprov.policy.engine imports qnprov.directory.ldapio (room qnprov.policy.)",
    ]
