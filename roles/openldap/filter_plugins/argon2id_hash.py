"""Jinja2 filters that hash the role's own passwords as argon2id on the controller.

Debian 12's slapd argon2 module (OpenLDAP 2.5.13) can only write argon2i, and every
value it writes ends in a NUL and a stray byte (the encoded length it stores counts
the C terminator). So the role no longer runs ``slappasswd -h {ARGON2}``: the rootDN
and service account hashes are computed here with argon2-cffi (a qnprov dependency,
so it is on every controller that runs the role), with the same parameters as
``qnprov accounts apply --password-scheme argon2``: argon2id, 19 MiB, t=2, p=1.
slapd verifies them with qnprov's argon2 module (files/qnprov_argon2.c), which hashes
the same way for the password modify operation.
"""

from __future__ import annotations

from typing import Any

# Same values as qnprov.directory.passwords (tests/directory/test_password_storage.py).
MEMORY_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1


def argon2id_hash(password: str) -> str:
    from argon2 import PasswordHasher

    hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=PARALLELISM)
    return "{ARGON2}" + hasher.hash(str(password))


def with_argon2id_hashes(accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``accounts`` with ``password_hash`` set from each ``password``."""
    return [dict(account, password_hash=argon2id_hash(account["password"])) for account in accounts]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"argon2id_hash": argon2id_hash, "with_argon2id_hashes": with_argon2id_hashes}
