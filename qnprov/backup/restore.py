"""``qnprov restore mailbox`` and ``restore --host``: the checks the controller makes before any host is asked. Pure.

The host script (templates/backup/qnprov-backup.py.j2, ``restore-mailbox``) checks the same again:
the address ends up in a restic ``--include`` path and in doveadm's arguments, and folder names in
doveadm's arguments, so neither may look like an option, a path step or a wildcard.
"""

from __future__ import annotations

import re
from typing import Any

from qnprov.errors import InputError

#: The same rule as the host script's RESTORE_ADDRESS.
ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
#: qnprov's Dovecot namespace separator (roles/dovecot).
SEPARATOR = "/"


def check_address(address: str) -> str:
    if not ADDRESS.fullmatch(address) or ".." in address or len(address) > 254:
        raise InputError(f"{address!r} is not a mail address qnprov restores (letters, digits and ._%+- "
                         "before the @, starting with a letter or digit)")
    return address


def check_folder(name: str, option: str) -> str:
    """A folder name for doveadm: one argument, never an option, no wildcard, no empty level."""
    if (not name or len(name) > 200 or name.startswith("-") or any(c in name for c in "*%\\")
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or any(part.strip() == "" for part in name.split(SEPARATOR))):
        raise InputError(f"{option} {name!r} is not a folder name (no leading -, no * % \\ or control "
                         f"characters, no empty level between {SEPARATOR})")
    return name


def host_arguments(address: str, *, folder: str | None, into: str | None, check: bool) -> list[str]:
    """The host script's arguments, each one ``--option=value`` token (never split into two)."""
    argv = [f"--address={check_address(address)}"]
    if folder is not None:
        argv.append(f"--folder={check_folder(folder, '--folder')}")
    if into is not None:
        argv.append(f"--into={check_folder(into, '--into')}")
    if check:
        argv.append("--check")
    return argv


# --- qnprov restore --host ------------------------------------------------------------------

#: What the controller converges before the host script restores the data (playbooks/).
CONVERGE_PLAYBOOKS = ("site.yml", "backup.yml")


def check_host(host: str, known: list[str]) -> str:
    """The one inventory host a full restore rebuilds: an exact name, never a pattern."""
    if host not in known:
        raise InputError(f"--host {host!r} is not a host of the inventory's mail_all "
                         f"({', '.join(sorted(known)) or 'none'}): name exactly one host")
    return host


def converge_steps(*, skip_site: bool) -> list[str]:
    """The playbooks ``restore --host`` runs on the host, in order."""
    return [p for p in CONVERGE_PLAYBOOKS if not (skip_site and p == "site.yml")]


def host_document(host: str, controller_steps: list[dict[str, Any]], report: dict[str, Any] | None,
                  seconds: float, *, check: bool, converge: list[str],
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` document: the controller's steps (converge) then the host's, the failed step if
    any, and the total seconds from the first converge to the audit check (the RTO figure)."""
    report = report or {}
    steps = list(controller_steps) + list(report.get("steps") or [])
    failed = next((s["step"] for s in steps if not s.get("ok")), None)
    ok = error is None and failed is None and bool(report) and report.get("ok", False)
    document: dict[str, Any] = {
        "action": "restore-host", "host": host, "ok": ok, "check": check,
        "snapshot": report.get("snapshot"), "snapshot_time": report.get("snapshot_time"),
        "contents": report.get("contents"), "steps": steps, "failed_step": failed, "seconds": round(seconds, 2)}
    if check:
        document["plan"] = [f"converge playbooks/{p} --limit {host}" for p in converge] + list(report.get("plan") or [])
    if error is not None:
        document["error"] = error
    elif not report.get("ok", False) and report.get("error"):
        document["error"] = report["error"]
    return document
