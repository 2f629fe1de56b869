"""The emergency block list: senders and domains the milter rejects during an incident.

One YAML file on every MTA (``/etc/qnprov/policy/blocklist.yml``)::

    blocks:
    - added: '2026-12-07T02:30:00+00:00'
      expires: '2026-12-07T04:30:00+00:00'   # null: until unblocked
      reason: phishing wave INC-42
      target: attacker@example.com             # an address, or a domain

``qnprov push block``/``unblock`` edit it and reload the milter (SIGHUP); the role
``qnprov_milter`` creates it from ``qnprov_milter_blocklist``. The milter loads it at start
and on every reload and matches each message's envelope sender and header ``From``
addresses against the entries that have not expired *at that moment*: an entry stops
applying by itself when its time is up, and stays in the file until it is unblocked. A
domain entry also covers its subdomains (``example.com`` blocks ``mx.example.com``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qnprov.errors import ConfigError, InputError

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Longest reason kept (it goes into SMTP replies and audit records).
REASON_LIMIT = 200


def _domain(text: str, whole: str) -> str:
    try:
        ascii_name = text.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InputError(f"{whole!r}: domain {text!r} is not a valid name ({exc})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InputError(f"{whole!r}: domain {text!r} needs at least two labels (example.com)")
    if len(ascii_name) > 253:
        raise InputError(f"{whole!r}: domain is longer than 253 characters")
    for label in labels:
        if not _LABEL.match(label):
            raise InputError(f"{whole!r}: domain label {label!r} is not letters, digits and inner hyphens")
    return ascii_name


def parse_target(text: str) -> str:
    """A sender address or a domain, normalised (lower case, IDNA domain); InputError naming the problem."""
    whole = text
    text = text.strip()
    if not text:
        raise InputError("empty sender or domain")
    if any(ch.isspace() or ch in "<>,;\"()[]\\" for ch in text):
        raise InputError(f"{whole!r}: a sender or domain has no spaces, brackets, quotes or commas")
    if text.startswith("@"):
        text = text[1:]
    if "@" not in text:
        return _domain(text, whole)
    local, _, domain = text.rpartition("@")
    if not local or not _LOCAL.match(local) or len(local) > 64:
        raise InputError(f"{whole!r}: local part {local!r} is not a valid mailbox name")
    # Lower case whole: matching ignores case, so ``unblock`` must find what ``block`` wrote.
    return f"{local.lower()}@{_domain(domain, whole)}"


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """``--expires``: a duration from now (``90s``, ``30m``, ``4h``, ``7d``, ``2w``) or an ISO date-time.

    A date-time without a zone is UTC.
    """
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise InputError(f"--expires {text!r}: the duration must be positive")
        return now + dt.timedelta(seconds=amount * _UNITS[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--expires {text!r}: give a duration (30m, 4h, 7d) or an ISO date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _timestamp(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an ISO date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Block:
    """One entry: ``target`` is an address (``user@domain``) or a domain."""

    target: str
    reason: str
    added: dt.datetime | None = None
    expires: dt.datetime | None = None

    @property
    def is_domain(self) -> bool:
        return "@" not in self.target

    def active(self, now: dt.datetime) -> bool:
        return self.expires is None or now < self.expires

    def matches(self, address: str) -> bool:
        address = address.strip().lower().rstrip(".")
        if "@" not in address:
            return False
        if not self.is_domain:
            return address == self.target.lower()
        domain = address.rpartition("@")[2]
        return domain == self.target or domain.endswith("." + self.target)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reason": self.reason,
            "added": self.added.isoformat(timespec="seconds") if self.added else None,
            "expires": self.expires.isoformat(timespec="seconds") if self.expires else None,
        }


def new_block(target: str, reason: str, *, now: dt.datetime, expires: str | None = None) -> Block:
    """A validated entry for ``push block``; InputError names what is wrong."""
    reason = " ".join(reason.split())
    if not reason:
        raise InputError("--reason must say why (it is sent in the rejection and kept in the audit trail)")
    if len(reason) > REASON_LIMIT:
        raise InputError(f"--reason is longer than {REASON_LIMIT} characters")
    return Block(target=parse_target(target), reason=reason, added=now.replace(microsecond=0),
                 expires=parse_expiry(expires, now).replace(microsecond=0) if expires else None)


@dataclass(frozen=True)
class BlockList:
    blocks: tuple[Block, ...] = ()

    def active(self, now: dt.datetime) -> list[Block]:
        return [block for block in self.blocks if block.active(now)]

    def match(self, addresses: Iterable[str], now: dt.datetime) -> tuple[Block, str] | None:
        """The first unexpired entry matching one of ``addresses``, with that address."""
        candidates = [a for a in addresses if a]
        for block in self.active(now):
            for address in candidates:
                if block.matches(address):
                    return block, address
        return None

    def with_block(self, block: Block) -> BlockList:
        """Add or replace the entry for ``block.target``."""
        return BlockList((*(b for b in self.blocks if b.target != block.target), block))

    def without(self, target: str) -> BlockList:
        return BlockList(tuple(b for b in self.blocks if b.target != target))

    def targets(self) -> list[str]:
        return [b.target for b in self.blocks]

    def dump(self) -> str:
        """The file's text, as the role's template writes it (``to_nice_yaml(indent=2)``)."""
        return yaml.safe_dump({"blocks": [b.to_json() for b in self.blocks]}, indent=2, allow_unicode=True,
                               default_flow_style=False, sort_keys=True)

    @classmethod
    def from_data(cls, data: Any, where: str = "block list") -> BlockList:
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or not isinstance(data.get("blocks", []), list):
            raise ConfigError(f"{where}: expected a mapping with a 'blocks' list")
        blocks = []
        for index, entry in enumerate(data.get("blocks") or []):
            at = f"{where}: blocks[{index}]"
            if not isinstance(entry, Mapping) or "target" not in entry or "reason" not in entry:
                raise ConfigError(f"{at}: each entry needs 'target' and 'reason'")
            unknown = set(entry) - {"target", "reason", "added", "expires"}
            if unknown:
                raise ConfigError(f"{at}: unknown keys {', '.join(sorted(map(str, unknown)))}")
            try:
                target = parse_target(str(entry["target"]))
            except InputError as exc:
                raise ConfigError(f"{at}: {exc}") from None
            blocks.append(Block(target=target, reason=str(entry["reason"]),
                                added=_timestamp(entry.get("added"), at),
                                expires=_timestamp(entry.get("expires"), at)))
        return cls(tuple(blocks))

    @classmethod
    def parse(cls, text: str, where: str = "block list") -> BlockList:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_data(data, where)

    @classmethod
    def load(cls, path: Path | None) -> BlockList:
        """The file's entries; a missing file is an empty list (a host before its first block)."""
        if path is None or not path.exists():
            return cls()
        return cls.parse(path.read_text(encoding="utf-8"), str(path))
