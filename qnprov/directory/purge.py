"""Retention: removing disabled accounts and their mailboxes once retention has passed.

Planning is pure (``plan_purge``). Execution removes the mailbox first and the LDAP
entry second: if the mailbox removal fails the entry stays and the next purge retries,
so a mailbox is never orphaned without a directory entry pointing at it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Protocol

from qnprov.directory.models import DirectoryState
from qnprov.errors import ExternalError

VMAIL_ROOT = PurePosixPath("/var/vmail")  # Dovecot userdb home: /var/vmail/%d/%n (docs/design.md)
_SAFE_LOCAL = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_SAFE_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class PurgeItem:
    employee_id: str
    dn: str
    mail: str
    disabled_at: str
    mailbox: PurePosixPath


@dataclass
class PurgePlan:
    items: list[PurgeItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # disabled entries that cannot be purged safely


def parse_generalized_time(value: str) -> datetime:
    """``20261129201500Z`` (seconds and fractions optional) as an aware UTC datetime."""
    digits = value.rstrip("Z").split(".")[0]
    for layout in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d%H"):
        try:
            return datetime.strptime(digits, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"not a generalized time: {value!r}")


def generalized_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def mailbox_path(mail: str) -> PurePosixPath:
    """The mailbox directory of ``mail``; refuses anything that could leave /var/vmail."""
    local, _, domain = mail.lower().partition("@")
    if not _SAFE_LOCAL.match(local) or ".." in local or not _SAFE_DOMAIN.match(domain) or ".." in domain:
        raise ValueError(f"refusing to derive a mailbox path from {mail!r}")
    return VMAIL_ROOT / domain / local


def plan_purge(state: DirectoryState, older_than_days: int, now: datetime) -> PurgePlan:
    if older_than_days < 0:
        raise ValueError("--older-than must be zero or more days")
    cutoff = now - timedelta(days=older_than_days)
    result = PurgePlan()
    for eid in sorted(state.accounts):
        account = state.accounts[eid]
        if account.status != "disabled":
            continue
        if not account.disabled_at:
            result.skipped.append(f"{account.dn}: disabled without qnDisabledAt; set it to start retention")
            continue
        try:
            disabled = parse_generalized_time(account.disabled_at)
            path = mailbox_path(account.mail)
        except ValueError as exc:
            result.skipped.append(f"{account.dn}: {exc}")
            continue
        if disabled <= cutoff:
            result.items.append(PurgeItem(eid, account.dn, account.mail, account.disabled_at, path))
    return result


class MailboxRemover(Protocol):
    def remove(self, mailbox: PurePosixPath) -> None: ...


def removal_argv(mailbox: PurePosixPath) -> list[str]:
    return ["rm", "-rf", "--one-file-system", "--", str(mailbox)]


@dataclass
class PrintingRemover:
    """Removes nothing; collects the commands an operator runs on the mail host."""

    commands: list[str] = field(default_factory=list)

    def remove(self, mailbox: PurePosixPath) -> None:
        self.commands.append(shlex.join(removal_argv(mailbox)))


@dataclass
class CommandRemover:
    """Runs the removal through a prefix: ``podman exec CONTAINER`` or ``ssh HOST``.

    For ssh the remote side gets one shell-quoted string, since ssh hands it to a shell.
    """

    prefix: Sequence[str]
    timeout: float = 600.0

    def remove(self, mailbox: PurePosixPath) -> None:
        argv = removal_argv(mailbox)
        command = [*self.prefix, shlex.join(argv)] if self.prefix and self.prefix[0] == "ssh" \
            else [*self.prefix, *argv]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExternalError(f"removing {mailbox}: {exc}") from exc
        if result.returncode != 0:
            raise ExternalError(f"removing {mailbox} failed ({result.returncode}): {result.stderr.strip()[:200]}")
