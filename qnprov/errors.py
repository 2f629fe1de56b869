"""Error types for qnprov.

Every error a user can cause is a ``QnprovError``: the CLI prints its message as
one line and exits with ``exit_code``. Subclasses also inherit the matching
builtin so library callers can catch them naturally.
"""

from __future__ import annotations

from typing import Any


class QnprovError(Exception):
    """Base class for every error qnprov raises on purpose."""

    exit_code = 1


class ConfigError(QnprovError, ValueError):
    """A configuration value, inventory variable or file is wrong."""

    exit_code = 2


class InputError(QnprovError, ValueError):
    """User input (a roster, a message file, ...) is invalid.

    ``errors`` carries one dict per problem, e.g. ``{"line": 7, "field":
    "employee_id", "reason": "duplicate"}``.
    """

    exit_code = 2

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, Any]] = list(errors or [])


class ExternalError(QnprovError, RuntimeError):
    """A program or service qnprov drives failed (podman, ansible, slapd, ...)."""

    exit_code = 1
