"""The change that makes slapd's module list load qnprov's argon2 module, not Debian's.

Both modules register the ``{ARGON2}`` scheme, and slapd uses whichever it loaded
last, so Debian's ``argon2`` must leave the list; slapd refuses to drop an
olcModuleLoad value while it runs, so tasks/config.yml applies this LDIF with
slapmodify while slapd is stopped (once, on a directory from an older release).
"""

from __future__ import annotations

import re
from typing import Any

_INDEX = re.compile(r"^\{\d+\}")


def _name(value: str) -> str:
    words = _INDEX.sub("", value).split()
    return words[0].rsplit("/", 1)[-1] if words else ""


def openldap_module_list_ldif(loaded: Any, wanted: str, dn: str = "cn=module{0},cn=config") -> str:
    """LDIF for slapmodify, or "" when ``loaded`` (olcModuleLoad values) is right.

    Removes Debian's argon2 module (``argon2``, ``argon2.so``, ``argon2.la``, with or
    without arguments) and any other line for ``wanted``'s module (other
    parameters), then adds ``wanted`` ("/path/qnprov_argon2.so m=.. t=.. p=..").
    """
    values = [loaded] if isinstance(loaded, str) else list(loaded or [])
    wanted_name = _name(wanted)
    stale = [v for v in values
             if _name(v) in ("argon2", "argon2.so", "argon2.la")
             or (_name(v) == wanted_name and _INDEX.sub("", v) != wanted)]
    present = any(_INDEX.sub("", v) == wanted for v in values)
    if not stale and present:
        return ""
    lines = [f"dn: {dn}", "changetype: modify"]
    if stale:
        lines += ["delete: olcModuleLoad", *(f"olcModuleLoad: {v}" for v in stale), "-"]
    if not present:
        lines += ["add: olcModuleLoad", f"olcModuleLoad: {wanted}", "-"]
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"openldap_module_list_ldif": openldap_module_list_ldif}
