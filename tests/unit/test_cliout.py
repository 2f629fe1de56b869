"""qnprov.cliout owns terminal output and exit codes; the CLI areas only call it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from qnprov import cliout, paths
from qnprov.errors import ConfigError, ExternalError, InputError

PACKAGE = paths.PROJECT_ROOT / "qnprov"
OUTPUT_MODULE = PACKAGE / "cliout.py"


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"), str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def _called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def test_only_the_output_module_creates_a_console() -> None:
    creators = sorted(str(path.relative_to(paths.PROJECT_ROOT)) for path, tree in _modules()
                      for node in ast.walk(tree) if isinstance(node, ast.Call) and _called_name(node) == "Console")
    assert creators == ["qnprov/cliout.py", "qnprov/cliout.py"], creators


def test_only_the_output_module_turns_errors_into_exit_codes() -> None:
    """Reading ``exc.exit_code`` is the mapping; errors.py defines it, cliout.py applies it."""
    readers = sorted({str(path.relative_to(paths.PROJECT_ROOT)) for path, tree in _modules()
                      for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr == "exit_code"
                      and isinstance(node.ctx, ast.Load)})
    assert readers == ["qnprov/cliout.py"], readers


def test_exit_codes_follow_the_error_kind() -> None:
    assert cliout.exit_code(ConfigError("x")) == 2
    assert cliout.exit_code(InputError("x")) == 2
    assert cliout.exit_code(ExternalError("x")) == 1
    assert cliout.exit_code(KeyboardInterrupt()) == 130
    with pytest.raises(TypeError):
        cliout.exit_code(RuntimeError("a bug keeps its traceback"))


def _app(raise_: Exception | None, *, json_doc: bool = False) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @cliout.user_errors((lambda exc: {"message": str(exc)}) if json_doc else None)
    def run(value: int = 1) -> None:
        if raise_ is not None:
            raise raise_
        cliout.print_json({"value": value, "text": "Hạ Long"})

    return app


def test_user_errors_keeps_the_command_signature_and_maps_errors() -> None:
    runner = CliRunner()
    ok = runner.invoke(_app(None), ["--value", "7"])
    assert ok.exit_code == 0 and json.loads(ok.stdout) == {"value": 7, "text": "Hạ Long"}
    bad = runner.invoke(_app(ConfigError("inventory x not found")), [])
    assert bad.exit_code == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: inventory x not found"
    brackets = runner.invoke(_app(InputError("line 3: [/bold] is not a [b]name")), [])
    assert brackets.exit_code == 2 and brackets.stderr.strip() == "error: line 3: [/bold] is not a [b]name"
    failed = runner.invoke(_app(ExternalError("podman is gone")), [])
    assert failed.exit_code == 1 and "podman is gone" in failed.stderr
    as_json = runner.invoke(_app(InputError("3 invalid rows"), json_doc=True), [])
    assert as_json.exit_code == 2 and json.loads(as_json.stdout) == {"message": "3 invalid rows"}
    assert as_json.stderr == ""


def test_mta_sts_policy_and_freemail_are_commands_of_the_main_cli() -> None:
    """What roles/mta_sts and roles/postfix run on the controller (``python -m qnprov ...``)."""
    base = [sys.executable, "-m", "qnprov"]
    policy = subprocess.run([*base, "dns", "mta-sts-policy", "--max-age", "86400", "mx1.example.test"],
                            capture_output=True, text=True, check=False, timeout=120)
    assert policy.returncode == 0, policy.stderr
    assert json.loads(policy.stdout)["policy"] == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n")
    tables = subprocess.run([*base, "policy", "freemail", "domains", "Extra-Free.VN."],
                            capture_output=True, text=True, check=False, timeout=120)
    assert tables.returncode == 0, tables.stderr
    assert "extra-free.vn" in tables.stdout.splitlines() and "gmail.com" in tables.stdout.splitlines()
    bad = subprocess.run([*base, "policy", "freemail", "postfix-tables", "not a domain"],
                         capture_output=True, text=True, check=False, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: not a domain name: not a domain"


def test_freemail_choices_are_the_forwarding_modes() -> None:
    from qnprov.policy import cli, forwarding

    assert tuple(choice.value for choice in cli._FreemailOutput) == forwarding.MODES


def test_lab_commands_live_in_their_own_module() -> None:
    from qnprov import cli, lab_cli

    assert any(group.typer_instance is lab_cli.lab_app and group.name == "lab" for group in cli.app.registered_groups)
    assert {c.name for c in lab_cli.lab_app.registered_commands} == {"up", "status", "smoke", "drill", "down"}
    assert "lab_app" not in {n.targets[0].id for n in ast.parse((PACKAGE / "cli.py").read_text()).body  # type: ignore[attr-defined]
                             if isinstance(n, ast.Assign)}


@pytest.mark.parametrize(("task_file", "sample_args", "key"), [
    ("roles/mta_sts/tasks/config.yml", ["--mode", "testing", "--max-age", "86400", "mx1.example.test"], "policy"),
    ("roles/postfix/tasks/config.yml", ["extra.example"], "recipient_regexp"),
])
def test_the_roles_controller_commands_exist(task_file: str, sample_args: list[str], key: str) -> None:
    """The literal words after ``'-m', 'qnprov'`` in a role's argv are a command that prints JSON."""
    import re

    from qnprov.cli import app

    text = (paths.PROJECT_ROOT / task_file).read_text(encoding="utf-8")
    argv = re.search(r"\[ansible_playbook_python, '-m', 'qnprov', ((?:'[a-z-]+', )*'[a-z-]+')", text)
    assert argv, f"{task_file} no longer runs python -m qnprov"
    words = re.findall(r"'([a-z-]+)'", argv.group(1))
    if "--mode" in words:  # the role passes its own mode and max-age after the command words
        words = words[:words.index("--mode")]
    result = CliRunner().invoke(app, [*words, *sample_args])
    assert result.exit_code == 0, result.stderr
    assert key in json.loads(result.stdout)
