"""Initial passwords: generation, hashing, and the 0600 hand-over files.

Hash scheme trade-off (docs/directory.md): initial passwords are 120-bit random
strings, so even a fast salted hash cannot be brute-forced; {SSHA} is the default and
costs microseconds, which keeps a 20,000-account import as fast as ldapadd. {ARGON2}
(memory-hard) is available with ``--password-scheme argon2`` and is computed in a
process pool, about 20 ms per hash per core: argon2id, 19 MiB, t=2, p=1.

Passwords a person chooses later (LDAP password modify, by the person or by an admin)
are hashed by slapd itself (olcPasswordHash {ARGON2}), with the same argon2id
parameters, by qnprov's own slapd module (roles/openldap/files/qnprov_argon2.c, a thin
wrapper over libargon2). Debian 12's slapd (2.5.13) ships an argon2 module that cannot
be used for this: it hard-codes argon2i and stores the encoded string's length as
computed for argon2id *including* the C terminator, so every value it writes ends in a
NUL and one uninitialised byte. qnprov's module replaces it (``SLAPD_ARGON2_MODULE``,
``SLAPD_ARGON2_MODULE_ARGS``) and still verifies the argon2i hashes Debian's module wrote.
``stored_password_problem`` is the one rule for what may be stored (docs/ldap-schema.md).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal, TextIO

PasswordScheme = Literal["ssha", "argon2"]

ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1
# What slapd uses for the password modify operation; the openldap role's vars and the
# test slapd carry the same values (tests/directory/test_password_storage.py).
SLAPD_PASSWORD_HASH = "{ARGON2}"  # noqa: S105 - a scheme name
SLAPD_ARGON2_MODULE = "qnprov_argon2.so"
SLAPD_ARGON2_MODULE_ARGS = f"m={ARGON2_MEMORY_KIB} t={ARGON2_TIME_COST} p={ARGON2_PARALLELISM}"
MIN_MEMORY_KIB = 19 * 1024
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ARGON2ID = re.compile(r"\{ARGON2\}\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{22,}")
_YESCRYPT = re.compile(r"\{CRYPT\}\$y\$j([./0-9A-Za-z])([./0-9A-Za-z])\$[./0-9A-Za-z]{16,}\$[./0-9A-Za-z]{43}")
_SSHA = re.compile(r"\{SSHA\}[A-Za-z0-9+/]{32,}={0,2}")
_SAFE_FILE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# No look-alike characters (0/O, 1/l/I): people type these from a printed sheet.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 21  # log2(56) * 21 = 122 bits


_ACCEPT_BELOW = 256 - 256 % len(_ALPHABET)  # rejection sampling keeps every character equally likely


def generate_password() -> str:
    chars: list[str] = []
    while len(chars) < PASSWORD_LENGTH:
        chars.extend(_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(32) if b < _ACCEPT_BELOW)
    return "".join(chars[:PASSWORD_LENGTH])


def ssha(password: str) -> str:
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _argon2_many(passwords: Sequence[str]) -> list[str]:
    from argon2 import PasswordHasher

    # RFC 9106 second recommended profile, lightened to 19 MiB (OWASP's minimum for argon2id).
    hasher = PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB,
                            parallelism=ARGON2_PARALLELISM)
    return ["{ARGON2}" + hasher.hash(p) for p in passwords]


def hash_passwords(passwords: Sequence[str], scheme: PasswordScheme = "ssha",
                   workers: int | None = None) -> list[str]:
    if scheme == "ssha":
        return [ssha(p) for p in passwords]
    if len(passwords) < 64:
        return _argon2_many(passwords)
    workers = workers or os.cpu_count() or 1
    chunk = max(16, len(passwords) // (workers * 4))
    chunks = [passwords[i:i + chunk] for i in range(0, len(passwords), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [h for hashed in pool.map(_argon2_many, chunks) for h in hashed]


def stored_password_problem(value: bytes | str) -> str | None:
    """Why a stored userPassword/olcRootPW value is not acceptable, or None if it is.

    Accepted, as exactly the hash and nothing after it (no NUL, no trailing byte):
    ``{ARGON2}$argon2id$v=19$m>=19456,t>=2,p=1$...`` (qnprov, the openldap role and
    slapd's password modify), ``{CRYPT}$y$j..$`` yescrypt of at least 19 MiB (written by
    slapd's password modify in the release before qnprov's argon2 module; replaced by
    argon2id at the next change), and ``{SSHA}`` (only ``qnprov accounts apply``'s
    default for 120-bit random initial passwords). The reason never contains the value.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return f"not ASCII text ({len(value)} bytes; trailing bytes after the hash?)"
    if not value.isprintable():
        return "carries control characters (a NUL after the hash?)"
    if value.upper().startswith("{ARGON2}"):
        argon = _ARGON2ID.fullmatch(value)
        if argon is None:
            return "{ARGON2} but not a clean argon2id v19 hash (argon2i/argon2d, or junk)"
        memory, time_cost, parallelism = (int(g) for g in argon.groups())
        if memory < MIN_MEMORY_KIB or time_cost < 2 or parallelism != 1:
            return f"argon2id parameters too weak: m={memory},t={time_cost},p={parallelism}"
        return None
    if value.upper().startswith("{CRYPT}"):
        yes = _YESCRYPT.fullmatch(value)
        if yes is None:
            return "{CRYPT} but not a yescrypt ($y$) hash"
        n_log2 = _ITOA64.index(yes.group(1)) + 1
        block = _ITOA64.index(yes.group(2)) + 1
        memory = 128 * block * (1 << n_log2) // 1024
        if memory < MIN_MEMORY_KIB:
            return f"yescrypt memory too small: {memory} KiB"
        return None
    if value.upper().startswith("{SSHA}"):
        return None if _SSHA.fullmatch(value) else "{SSHA} but not a clean salted SHA-1 value"
    return "cleartext or a scheme other than {ARGON2} argon2id, {CRYPT} yescrypt or {SSHA}"


class CredentialsWriter:
    """Writes ``DIR/<AGENCY>.csv`` (employee_id,address,initial_password).

    Each file is created with mode 0600 by ``os.open`` itself, so there is no moment at
    which it exists with looser permissions; the directory is created 0700.
    """

    HEADER = ("employee_id", "address", "initial_password")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._files: dict[str, tuple[TextIO, csv.DictWriter[str]]] = {}
        self.written = 0

    def _writer(self, agency: str) -> csv.DictWriter[str]:
        if agency not in self._files:
            if not _SAFE_FILE_STEM.match(agency):
                raise ValueError(f"agency code {agency!r} cannot name a credentials file")
            path = self.directory / f"{agency}.csv"
            existed = path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)  # an older file from a previous run is tightened too
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
            writer = csv.DictWriter(handle, fieldnames=self.HEADER)
            if not existed:
                writer.writeheader()
            self._files[agency] = (handle, writer)
        return self._files[agency][1]

    def add(self, agency: str, employee_id: str, address: str, password: str) -> None:
        self._writer(agency).writerow({"employee_id": employee_id, "address": address,
                                       "initial_password": password})
        self.written += 1

    def flush(self) -> None:
        for handle, _ in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        self.flush()
        for handle, _ in self._files.values():
            handle.close()
        self._files.clear()
