"""The package's shape: no import cycles, and no module over 400 lines without a stated reason.

The import graph is built from the source with ``ast`` (nothing is imported), from every
``import`` statement in a module: at module level, under ``if TYPE_CHECKING:`` and inside
functions. A function-level import only postpones a cycle to run time, so it counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "qnprov"
MAX_LINES = 400
SIZE_REASON = "size-reason:"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root`` (a package directory)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None: outside it)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _resolve(alias.name, modules)
                if found is not None:
                    targets.add(found)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module.
                found = _resolve(f"{source}.{alias.name}", modules) or _resolve(source, modules)
                if found is not None:
                    targets.add(found)
    targets.discard(module)  # a package __init__ naming its own attributes
    return targets


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: _imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (as a path that returns to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle found in component {component}")  # Tarjan guarantees one


def oversized_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """Modules over ``limit`` lines whose docstring has no line starting ``size-reason:``."""
    found: list[str] = []
    for name, path in module_names(root).items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines <= limit:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith(SIZE_REASON) for line in docstring.splitlines()):
            found.append(f"{name} ({lines} lines)")
    return found


# --- the checks on qnprov ----------------------------------------------------------------


def test_qnprov_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE_ROOT)
    assert len(graph) > 50, f"only {len(graph)} modules found under {PACKAGE_ROOT}"
    assert "qnprov.policy.extract_types" in graph["qnprov.policy.pdf"]  # the walk sees real edges
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_over_400_lines_without_a_size_reason() -> None:
    oversized = oversized_modules(PACKAGE_ROOT)
    assert not oversized, (
        f"modules over {MAX_LINES} lines: {', '.join(oversized)}; split them, or say why not "
        f"on a docstring line starting {SIZE_REASON!r}"
    )


# --- the checkers themselves, on made-up packages ------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cycle_through_a_function_level_import_is_found_and_named(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import thing\n",
        "b.py": "def thing():\n    from pkg.sub import c\n    return c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n",
        "d.py": "import pkg.a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_acyclic_package_has_no_cycles_and_package_init_reexports_are_fine(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "m/__init__.py": "from pkg.m.core import run\nfrom . import helpers\n",
        "m/core.py": "from pkg.m.helpers import h\nimport json\n",
        "m/helpers.py": "from pkg import other\n",
        "other.py": "",
    })
    graph = import_graph(root)
    assert graph["pkg.m"] == {"pkg.m.core", "pkg.m.helpers"}
    assert graph["pkg.m.helpers"] == {"pkg.other"}
    assert find_cycles(graph) == []


def test_submodule_importing_its_own_package_init_is_a_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "m/__init__.py": "from pkg.m.core import run\n",
        "m/core.py": "from pkg.m import settings_value\n",
    })
    assert find_cycles(import_graph(root)) == [["pkg.m", "pkg.m.core", "pkg.m"]]


@pytest.mark.parametrize(("docstring", "flagged"), [
    ('"""Big.\n\nsize-reason: one parser, one state machine."""\n', False),
    ('"""Big.\n\nThe size-reason: mentioned mid-line does not count."""\n', True),
    ("", True),
])
def test_size_check_needs_a_size_reason_line(tmp_path: Path, docstring: str, flagged: bool) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "big.py": docstring + "x = 1\n" * (MAX_LINES + 1),
        "small.py": "x = 1\n" * (MAX_LINES - 1),
    })
    lines = MAX_LINES + 1 + docstring.count("\n")
    assert oversized_modules(root) == ([f"pkg.big ({lines} lines)"] if flagged else [])
