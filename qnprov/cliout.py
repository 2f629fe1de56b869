"""The command line's one output and error layer.

Every ``qnprov`` command prints through this module:

- ``out`` (stdout) for what the user asked for, ``err`` (stderr) for progress,
  warnings and errors. No other module creates a rich ``Console``
  (tests/unit/test_cliout.py checks).
- ``print_json`` for ``--json``: one document on stdout and nothing else.
- Exit codes: a :class:`~qnprov.errors.QnprovError` becomes one ``error:`` line on
  stderr and its ``exit_code`` (:func:`user_errors`, :func:`main`); a command whose
  run worked but found failures (a failed deploy, a failed control, a tampered
  audit log) ends with :data:`EXIT_FAILED` through :func:`finish`; Ctrl-C is
  :data:`EXIT_INTERRUPTED`. No other module reads ``exit_code`` (same test).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from qnprov.errors import QnprovError

#: The command ran and found something wrong (a failed host, control or check).
EXIT_FAILED = 1
#: Interrupted by the user (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: The ``--json`` option of every command that can print one document for machines.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for machines.")]

#: Builds the ``--json`` document a command prints for an error instead of the line, or None.
JsonOnError = Callable[[QnprovError], Any]


def print_json(data: Any, *, indent: int | None = 2) -> None:
    """Machine output goes to stdout alone, one document, nothing else."""
    sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def exit_code(exc: BaseException) -> int:
    """The process exit code for an exception the CLI reports instead of a traceback."""
    if isinstance(exc, QnprovError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    raise TypeError(f"{type(exc).__name__} is not a user error") from exc


def report_error(exc: BaseException) -> None:
    """One line on stderr: the error's message, never a traceback."""
    if isinstance(exc, KeyboardInterrupt):
        err.print("[red]interrupted[/red]")
    else:
        # The message is text, never markup: "[/x]" or "[bold]" in a value prints as it is.
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)


@contextlib.contextmanager
def user_errors(json_on_error: JsonOnError | None = None) -> Iterator[None]:
    """A QnprovError raised inside becomes its line (or ``--json`` document) and exit code.

    Also a decorator (``@user_errors()``): typer sees the wrapped command's signature.
    """
    try:
        yield
    except QnprovError as exc:
        document = json_on_error(exc) if json_on_error else None
        if document is not None:
            print_json(document, indent=None)
        else:
            report_error(exc)
        raise typer.Exit(exit_code(exc)) from None


def finish(ok: bool) -> None:
    """End a command that ran to completion: exit :data:`EXIT_FAILED` when it found failures."""
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def leave(code: int) -> NoReturn:
    """End a command with an exit code it computed itself (a playbook's, the milter's)."""
    raise typer.Exit(code)


def main(app: Callable[[], Any]) -> None:
    """Run the root typer app: errors that escaped a command still end as one line and a code."""
    try:
        app()
    except (QnprovError, KeyboardInterrupt) as exc:
        report_error(exc)
        sys.exit(exit_code(exc))
