"""The runtime wheel holds qnprov only: no test support module reaches the mail hosts.

The ``qnprov_milter`` role builds the wheel it installs on the hosts with ``pip wheel``
from the source tree, so what the wheel holds is what setuptools' package finder selects
with pyproject.toml's ``[tool.setuptools.packages.find]``. This runs the same finder with
the same options on the tree and lists the modules the wheel would carry.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

from qnprov import paths

#: Test support that must stay out of the wheel, by module name.
TEST_SUPPORT_MODULES = {"slapd", "postfix", "synthetic", "molecule_verify"}
#: Their old names inside qnprov, before they moved to qnprov_testing.
OLD_TEST_SUPPORT_STEMS = {"testslapd", "testpostfix", "synthetic", "molecule_verify"}


def wheel_modules(root: Path) -> set[str]:
    """Dotted names of the .py modules the wheel built from ``root`` contains."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = find_namespace_packages(where=str(root / find.get("where", ["."])[0]),
                                       include=find.get("include", ["*"]), exclude=find.get("exclude", []))
    modules = set()
    for package in packages:
        directory = root.joinpath(*package.split("."))
        modules.update(f"{package}.{module.stem}" for module in directory.glob("*.py"))
    return modules


def test_wheel_carries_the_runtime_package() -> None:
    modules = wheel_modules(paths.PROJECT_ROOT)
    # The finder really found the package: the milter the hosts run and the CLI are in it.
    assert {"qnprov.cli", "qnprov.policy.engine", "qnprov.directory.ldapio"} <= modules


def test_wheel_leaves_out_the_test_support_package() -> None:
    root = paths.PROJECT_ROOT
    support = {module.stem for module in (root / "qnprov_testing").glob("*.py")}
    # The support modules exist in the tree, so their absence from the wheel means something.
    assert support >= TEST_SUPPORT_MODULES
    modules = wheel_modules(root)
    assert not [m for m in modules if m.split(".")[0] != "qnprov"], sorted(modules)
    assert not [m for m in modules if m.rsplit(".", 1)[-1] in OLD_TEST_SUPPORT_STEMS]


def test_the_finder_check_catches_a_broad_include(tmp_path: Path) -> None:
    """The old ``include = ["qnprov*"]`` also matched qnprov_testing; the check sees that."""
    for package in ("qnprov", "qnprov_testing"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "qnprov_testing" / "slapd.py").write_text("", encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.packages.find]\ninclude = ["qnprov*"]\n',
                                             encoding="utf-8")
    assert wheel_modules(tmp_path) == {"qnprov.__init__", "qnprov_testing.__init__", "qnprov_testing.slapd"}
