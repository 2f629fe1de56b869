"""Pure parsers for the state the suite reads from a host.

Each function takes the text a command printed and returns plain data, so the
parsing is unit-tested with fixtures and the suite's checks stay short.
"""

from __future__ import annotations

import ast
import base64
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any


def parse_postconf(text: str) -> dict[str, str]:
    """``postconf`` / ``postconf -n`` output -> {parameter: value}."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            values[name.strip()] = value.strip()
        elif line.endswith(" ="):
            values[line[:-2].strip()] = ""
    return values


def parse_service_params(text: str) -> dict[str, dict[str, str]]:
    """``postconf -P`` output -> {"submission/inet": {param: value}}."""
    services: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if not sep or key.count("/") < 2:
            continue
        service, kind, param = key.strip().split("/", 2)
        services.setdefault(f"{service}/{kind}", {})[param] = value.strip()
    return services


@dataclass(frozen=True)
class MasterService:
    name: str
    kind: str
    command: str
    args: tuple[str, ...]


def parse_master_services(text: str) -> list[MasterService]:
    """``postconf -M`` output (one service per line) -> services."""
    services = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or line.startswith("#"):
            continue
        services.append(MasterService(fields[0], fields[1], fields[7], tuple(fields[8:])))
    return services


_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_parameters(value: str, parameters: dict[str, str], depth: int = 5) -> str:
    """Expand plain ``$name`` / ``${name}`` references (not ``${name?x}`` conditionals)."""
    for _ in range(depth):
        expanded = _REFERENCE.sub(lambda m: parameters.get(m.group(1) or m.group(2), m.group(0)), value)
        if expanded == value:
            break
        value = expanded
    return value


def split_list(value: str) -> list[str]:
    """Postfix/Dovecot list syntax: commas and/or whitespace."""
    return [item for item in re.split(r"[\s,]+", value.strip()) if item]


def networks_are_loopback(value: str) -> tuple[bool, list[str]]:
    """Whether every entry of a mynetworks-style list lies in 127/8 or ::1; returns offenders."""
    offenders = []
    for item in split_list(value):
        text = item.strip("[]").replace("]/", "/")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            offenders.append(item)
            continue
        if not network.is_loopback:
            offenders.append(item)
    return (not offenders, offenders)


def parse_ldif(text: str) -> list[dict[str, list[str]]]:
    """Minimal LDIF reader: unfolds lines, decodes ``attr::`` base64 values, ignores comments."""
    entries: list[dict[str, list[str]]] = []
    unfolded: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and unfolded:
            unfolded[-1] += raw[1:]
        else:
            unfolded.append(raw)
    current: dict[str, list[str]] = {}
    for line in unfolded:
        if not line.strip():
            if current:
                entries.append(current)
                current = {}
            continue
        if line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(":"):
            decoded = base64.b64decode(value[1:].strip())
            value = decoded.decode("utf-8", "replace")
        else:
            value = value.strip()
        current.setdefault(name.strip().lower(), []).append(value)
    if current:
        entries.append(current)
    return entries


def strip_ordering(value: str) -> str:
    """cn=config ordered values carry a ``{N}`` prefix."""
    return re.sub(r"^\{\d+\}", "", value).strip()


def find_entry(entries: list[dict[str, list[str]]], predicate: Any) -> list[dict[str, list[str]]]:
    return [entry for entry in entries if predicate(entry)]


def data_databases(config: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    """The cn=config entries of the data (mdb) databases."""
    return [e for e in config if "olcmdbconfig" in [o.lower() for o in e.get("objectclass", [])]]


def global_config(config: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    for entry in config:
        if entry.get("dn", [""])[0].lower() == "cn=config":
            return entry
    return {}


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    process: str

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address.split("%")[0]).is_loopback
        except ValueError:
            return False


def parse_ss_listeners(text: str) -> list[Listener]:
    """``ss -Hltnp`` (or ``-Hlunp``) output -> listeners with their process names."""
    listeners = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]")
        process_match = re.search(r'users:\(\("([^"]+)"', line)
        if port.isdigit():
            listeners.append(Listener(address, int(port), process_match.group(1) if process_match else ""))
    return listeners


def parse_sshd_t(text: str) -> dict[str, str]:
    """``sshd -T`` output -> {lower-case keyword: value} (first occurrence wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key.lower() not in values:
            values[key.lower()] = value.strip()
    return values


def parse_fail2ban_dump(text: str) -> list[list[Any]]:
    """``fail2ban-client -d`` prints one Python list per line; keep the lists."""
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            try:
                value = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list):
                commands.append(value)
    return commands


def fail2ban_jail_backends(commands: list[list[Any]]) -> dict[str, str]:
    """['add', jail, backend] commands -> {jail: backend}."""
    return {str(c[1]): str(c[2]) for c in commands if len(c) >= 3 and c[0] == "add"}


def parse_fail2ban_status(text: str) -> list[str]:
    """``fail2ban-client status`` -> running jail names."""
    match = re.search(r"Jail list:\s*(.*)", text)
    if not match:
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


@dataclass(frozen=True)
class NftInput:
    """The inbound filter as nftables reports it.

    A packet must pass every base chain on the input hook: ``accept`` ends only its own
    chain, ``drop`` is final. So inbound default-drop holds when a drop-policy input
    chain covers IPv4 and IPv6, and what gets in is what those chains accept. Other
    input chains with policy accept (fail2ban's ``f2b-table``) open nothing.
    """

    chains: list[dict[str, Any]]
    #: Families covered by a drop-policy input chain ("inet" covers ip and ip6).
    drop_families: set[str]
    accepted_tcp_ports: set[int]
    unconditional_accepts: list[str]
    #: Sources accepted on every port (non-empty trusted sets): they bypass the allowlist.
    source_accepts: list[str]

    @property
    def default_drop(self) -> bool:
        return "inet" in self.drop_families or {"ip", "ip6"} <= self.drop_families


def _ports_from(right: Any, sets: dict[str, list[Any]]) -> set[int]:
    ports: set[int] = set()
    if isinstance(right, int):
        ports.add(right)
    elif isinstance(right, str) and right.startswith("@"):
        for element in sets.get(right[1:], []):
            ports |= _ports_from(element, sets)
    elif isinstance(right, str) and right.isdigit():
        ports.add(int(right))
    elif isinstance(right, dict) and "set" in right:
        for element in right["set"]:
            ports |= _ports_from(element, sets)
    elif isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        ports |= set(range(int(low), int(high) + 1))
    elif isinstance(right, list):
        for element in right:
            ports |= _ports_from(element, sets)
    return ports


_HARMLESS_MATCH_KEYS = ("ct", "meta", "icmp", "icmpv6")


def parse_nft_input(json_text: str) -> NftInput:
    """``nft -j list ruleset`` -> the input-hook chains and, for the drop-policy ones, the TCP
    ports they accept, any accept that matches nothing specific, and source-wide accepts."""
    data = json.loads(json_text)
    items = data.get("nftables", [])
    sets: dict[str, list[Any]] = {}
    chains: list[dict[str, Any]] = []
    for item in items:
        if "set" in item:
            sets[item["set"]["name"]] = item["set"].get("elem", [])
        if "chain" in item and item["chain"].get("hook") == "input":
            chains.append(item["chain"])
    drop_chains = {(c["family"], c["table"], c["name"]) for c in chains if c.get("policy") == "drop"}
    accepted: set[int] = set()
    unconditional: list[str] = []
    source_wide: list[str] = []
    for item in items:
        rule = item.get("rule")
        if not rule or (rule["family"], rule["table"], rule["chain"]) not in drop_chains:
            continue
        expressions = rule.get("expr", [])
        if not any("accept" in expr for expr in expressions):
            continue
        matches = [expr["match"] for expr in expressions if "match" in expr]
        has_port = any(isinstance(m.get("left"), dict) and m["left"].get("payload", {}).get("field") == "dport"
                       for m in matches)
        specific = False
        for match in matches:
            left = match.get("left", {})
            payload = left.get("payload", {}) if isinstance(left, dict) else {}
            if payload.get("field") == "dport" and payload.get("protocol") in ("tcp", "th"):
                accepted |= _ports_from(match.get("right"), sets)
                specific = True
            elif payload.get("field") == "dport":
                specific = True  # udp etc.: not a TCP allowance
            elif isinstance(left, dict) and any(key in left for key in _HARMLESS_MATCH_KEYS):
                specific = True
            elif payload:
                specific = True
                right = match.get("right")
                if payload.get("field") == "saddr" and not has_port:
                    members = sets.get(right[1:], []) if isinstance(right, str) and right.startswith("@") else [right]
                    if members:
                        source_wide.append(json.dumps(members)[:200])
        if not specific:
            unconditional.append(json.dumps(expressions)[:200])
    return NftInput(chains=chains, drop_families={family for family, _, _ in drop_chains},
                    accepted_tcp_ports=accepted, unconditional_accepts=unconditional, source_accepts=source_wide)


def parse_openssl_key_bits(text: str) -> tuple[str, int]:
    """``openssl pkey -pubin -noout -text`` / ``x509 -text`` -> (algorithm, bits)."""
    bits_match = re.search(r"Public-Key: \((\d+) bit\)", text)
    bits = int(bits_match.group(1)) if bits_match else 0
    if "id-ecPublicKey" in text or "ASN1 OID" in text or "NIST CURVE" in text:
        curve = re.search(r"ASN1 OID: (\S+)", text)
        return (f"EC {curve.group(1) if curve else '?'}", bits)
    if "rsaEncryption" in text or "RSA Public-Key" in text or "Modulus" in text:
        return ("RSA", bits)
    if "ED25519" in text.upper():
        return ("ED25519", 256)
    return ("unknown", bits)


def parse_rspamd_module_states(text: str) -> dict[str, set[str]]:
    """``rspamadm configdump -m``: 'Modules enabled: a, b' / 'Modules disabled (explicitly): c'."""
    states: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^Modules (enabled|disabled(?: \([^)]*\))?):\s*(.*)$", line.strip())
        if match:
            names = {name.strip() for name in match.group(2).split(",") if name.strip()}
            states.setdefault("enabled" if match.group(1) == "enabled" else "disabled", set()).update(names)
    return states
