"""``qnprov restore mailbox``: the checks the controller makes before any host is asked. Pure.

The host script (templates/backup/qnprov-backup.py.j2, ``restore-mailbox``) checks the same again:
the address ends up in a restic ``--include`` path and in doveadm's arguments, and folder names in
doveadm's arguments, so neither may look like an option, a path step or a wildcard.
"""

from __future__ import annotations

import re

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
