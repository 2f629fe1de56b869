"""Initial passwords: generation, hashing, and the 0600 hand-over files.

Hash scheme trade-off (docs/directory.md): initial passwords are 120-bit random
strings, so even a fast salted hash cannot be brute-forced; {SSHA} is the default and
costs microseconds, which keeps a 20,000-account import as fast as ldapadd. {ARGON2}
(memory-hard) is available with ``--password-scheme argon2`` and is computed in a
process pool, about 20 ms per hash per core. Passwords a person chooses later are
hashed by slapd itself (olcPasswordHash), not by qnprov.
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
    hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
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
