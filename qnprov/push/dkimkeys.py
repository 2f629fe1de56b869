"""The pure parts of a DKIM rotation (:mod:`qnprov.push.dkim`): selectors, keys, records, DNS, state.

Nothing here touches a host: the key and its ``p=`` value, how a private key is shown
(:func:`secret_label`, never its bytes), the record to publish, the wire format of the
one DNS question a rotation asks and the reading of its answer, the refusal messages,
and ``qnprov-dkim.json`` (:class:`DkimState`), the one record of each domain's active
selector, which ``roles/rspamd`` reads as well.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qnprov.dns import DkimKey, DnsRecord, dkim_key_record, dkim_record_name, dkim_txt_file
from qnprov.errors import ConfigError, InputError

STATE_NAME = "qnprov-dkim.json"
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def check_selector(selector: str) -> str:
    """A DNS label (letters, digits, hyphens), lower case: it names a key file and a record."""
    cleaned = selector.strip().lower()
    if not _SELECTOR.match(cleaned):
        raise InputError(f"{selector!r} is not a DKIM selector (one DNS label: a-z, 0-9, '-')",
                         [{"field": "selector", "value": selector}])
    return cleaned


def default_selector(now: dt.datetime) -> str:
    return f"s{now:%Y%m%d}"


def generate_key(bits: int) -> bytes:
    """A new RSA private key, PEM (PKCS#8), as rspamd reads it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if bits < 2048:
        raise ConfigError(f"rspamd_dkim_key_bits is {bits}; DKIM keys are at least 2048 bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_b64(private_pem: bytes) -> str:
    """The DKIM ``p=`` value of a private key: its SubjectPublicKeyInfo, base64."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def secret_label(content: bytes) -> str:
    """How a private key is shown: never its bytes."""
    return f"(secret, {len(content)} bytes, sha256 {hashlib.sha256(content).hexdigest()[:12]})"


#: ``<domain>.<selector>.txt`` as ``rspamadm dkim_keygen`` writes it (the record strings live in qnprov.dns).
txt_file = dkim_txt_file


def record(domain: str, selector: str, public: str) -> DnsRecord:
    return dkim_key_record(f"{domain}.", DkimKey(selector, public), purpose=f"DKIM key of selector {selector}")


#: The absolute name of a selector's key record.
record_name = dkim_record_name


def txt_public_key(value: str) -> str | None:
    """The ``p=`` of a DKIM TXT value (strings joined), or None when it is not a DKIM key."""
    tags = dict(part.strip().split("=", 1) for part in value.split(";") if "=" in part)
    if tags.get("v", "DKIM1").strip() != "DKIM1":
        return None
    public = re.sub(r"\s+", "", tags.get("p", ""))
    return public or None


@dataclass(frozen=True)
class Lookup:
    """What the resolver said about a selector's record."""

    name: str
    resolver: str
    rcode: int
    texts: tuple[str, ...] = ()

    @property
    def keys(self) -> list[str]:
        return [k for k in (txt_public_key(t) for t in self.texts) if k]

    def verdict(self, public: str) -> str:
        """``published`` (the key is there), ``missing`` (no DKIM key) or ``mismatch`` (another key)."""
        if public in self.keys:
            return "published"
        return "mismatch" if self.keys else "missing"


def refusal(domain: str, selector: str, lookup: Lookup, public: str) -> str | None:
    """Why ``--activate`` must not go on (None: the record carries the key)."""
    verdict = lookup.verdict(public)
    name = record_name(domain, selector)
    if verdict == "published":
        return None
    if verdict == "missing":
        rcode = {0: "no TXT record", 3: "NXDOMAIN", 2: "SERVFAIL", 5: "REFUSED"}.get(lookup.rcode,
                                                                                      f"rcode {lookup.rcode}")
        return (f"selector {selector} of {domain} is not published yet: {name} TXT is not visible through "
                f"the resolver {lookup.resolver} ({rcode}). Publish the record `qnprov push dkim rotate` printed, "
                "wait for it to be visible, then run --activate again (or --force to switch without it)")
    found = ", ".join(f"p={k[:16]}..." for k in lookup.keys)
    return (f"the DKIM key of selector {selector} ({domain}) does not match its published record: {name} TXT "
            f"carries {found}, the key on the MTAs is p={public[:16]}...; nothing was changed. Publish the record "
            "the rotation printed (or start again with another --selector)")


def dns_query(name: str, rdtype: int = 16, ident: int = 0x5153) -> bytes:
    """A recursive query (RD) for ``name``, in wire format."""
    wire = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        wire += bytes([len(raw)]) + raw
    return wire + b"\x00" + struct.pack("!HH", rdtype, 1)


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def parse_txt_answer(data: bytes, ident: int = 0x5153) -> tuple[int, list[str]]:
    """The rcode and the TXT values (each one's strings joined) of a DNS reply."""
    if len(data) < 12:
        raise ValueError("short DNS reply")
    got, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if got != ident or not flags & 0x8000:
        raise ValueError("not the reply to our query")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    texts = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        rtype, _, _, length = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        rdata, offset = data[offset:offset + length], offset + length
        if rtype != 16:
            continue
        parts, i = [], 0
        while i < len(rdata):
            parts.append(rdata[i + 1:i + 1 + rdata[i]].decode("utf-8", "replace"))
            i += 1 + rdata[i]
        texts.append("".join(parts))
    return flags & 0x000F, texts


@dataclass
class DomainState:
    active: str | None = None
    pending: dict[str, Any] | None = None  # {"selector", "key_sha256", "since"}
    retiring: list[dict[str, Any]] = field(default_factory=list)  # [{"selector", "since", "retire_after"}]


@dataclass
class DkimState:
    """``qnprov-dkim.json``: what each domain signs with, and what is on its way in or out."""

    domains: dict[str, DomainState] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes | None) -> DkimState:
        if not raw:
            return cls()
        try:
            doc = json.loads(raw.decode("utf-8"))
            return cls({d: DomainState(v.get("active"), v.get("pending"), list(v.get("retiring") or []))
                        for d, v in (doc.get("domains") or {}).items()})
        except (ValueError, AttributeError) as exc:
            raise OSError(f"{STATE_NAME} is unreadable, nothing changed: {exc}") from None

    def dump(self) -> bytes:
        doc = {"domains": {d: dataclasses.asdict(s) for d, s in sorted(self.domains.items())}}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def domain(self, name: str) -> DomainState:
        return self.domains.setdefault(name, DomainState())

    def selectors(self) -> dict[str, str]:
        """Domain -> active selector: what roles/rspamd reads (``_rspamd_dkim_selectors``)."""
        return {d: s.active for d, s in self.domains.items() if s.active}


def with_pending(state: DkimState, domain: str, selector: str, key_sha256: str, now: dt.datetime) -> DkimState:
    new = DkimState.parse(state.dump())
    entry = new.domain(domain)
    if entry.pending and entry.pending.get("selector") == selector and entry.pending.get("key_sha256") == key_sha256:
        return new
    entry.pending = {"selector": selector, "key_sha256": key_sha256, "since": now.isoformat(timespec="seconds")}
    return new


def with_active(state: DkimState, domain: str, selector: str, previous: str, now: dt.datetime,
                retire_after_days: int) -> DkimState:
    new = DkimState.parse(state.dump())
    entry = new.domain(domain)
    entry.active, entry.pending = selector, None
    entry.retiring = [r for r in entry.retiring if r.get("selector") not in (selector, previous)]
    if previous != selector:
        entry.retiring.append({"selector": previous, "since": now.isoformat(timespec="seconds"),
                               "retire_after": (now + dt.timedelta(days=retire_after_days)).isoformat(
                                   timespec="seconds")})
    return new



def retirement_due(retiring: Sequence[Mapping[str, Any]], now: dt.datetime) -> list[str]:
    """Selectors whose record may be removed now."""
    return [str(r["selector"]) for r in retiring if dt.datetime.fromisoformat(str(r["retire_after"])) <= now]
