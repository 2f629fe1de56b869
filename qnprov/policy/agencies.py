"""Which agency a mail address belongs to, for the audit trail (Article 2 monitoring).

Agency attribution is pluggable: anything with ``agency_of(address) -> str | None``
works. :class:`StaticAgencyMap` reads a YAML/JSON map; the :class:`LdapAgencyResolver`
asks the directory for ``qnAgencyCode``; :class:`NoAgencyResolver` is used when neither
is configured. :func:`agencies_for` picks the addresses of an event that count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from qnprov.errors import ConfigError


class AgencyResolver(Protocol):
    """Maps a mail address to the code of the agency that owns it."""

    def agency_of(self, address: str) -> str | None: ...


class NoAgencyResolver:
    """Used when no map is configured: every event has ``agency: null``."""

    def agency_of(self, address: str) -> str | None:
        return None


@dataclass(frozen=True)
class StaticAgencyMap:
    """Address or domain to agency code.

    Example: ``{"stttt@quangninh.gov.vn": "STTTT", "@ubnd.quangninh.gov.vn": "UBND"}``.

    Exact addresses win over ``@domain`` entries; both are case-insensitive.
    """

    entries: Mapping[str, str]

    @classmethod
    def from_file(cls, path: Path) -> StaticAgencyMap:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read agency map {path}: {exc}") from exc
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise ConfigError(f"agency map {path} must be a mapping of address or @domain to agency code")
        return cls({k.lower(): v for k, v in raw.items()})

    def agency_of(self, address: str) -> str | None:
        address = address.strip("<>").lower()
        if address in self.entries:
            return self.entries[address]
        _, _, domain = address.rpartition("@")
        return self.entries.get("@" + domain) if domain else None


class LdapAgencyResolver:
    """Looks up ``qnAgencyCode`` of the account or group that owns an address.

    Results are cached for ``ttl`` seconds so the milter does not ask the
    directory once per recipient per message.
    """

    def __init__(self, connection: Any, base_dn: str, *, ttl: float = 300.0) -> None:
        self._connection = connection
        self._base_dn = base_dn
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def agency_of(self, address: str) -> str | None:
        from ldap3.utils.conv import escape_filter_chars

        address = address.strip("<>").lower()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(address)
            if cached and now - cached[0] < self._ttl:
                return cached[1]
            value = escape_filter_chars(address)
            self._connection.search(
                self._base_dn,
                f"(&(qnAgencyCode=*)(|(mail={value})(mailLocalAddress={value})))",
                attributes=["qnAgencyCode"],
                size_limit=1,
            )
            agency: str | None = None
            for entry in self._connection.entries:
                agency = str(entry.qnAgencyCode.value)
                break
            self._cache[address] = (now, agency)
            return agency


def agencies_for(
    resolver: AgencyResolver, direction: str, sender: str, recipients: Sequence[str]
) -> list[str]:
    """The agencies an event belongs to: the sender's for outbound and internal
    mail (the official who acted), the recipients' for inbound mail."""
    if direction in ("outbound", "internal"):
        candidates: Sequence[str] = [sender]
        if direction == "internal":
            candidates = [sender, *recipients]
    else:
        candidates = recipients
    found = {a for a in (resolver.agency_of(addr) for addr in candidates if addr) if a}
    return sorted(found)
