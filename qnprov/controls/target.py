"""What the packaged suite needs to know about one host it verifies.

verify builds a :class:`VerifyTarget` per inventory host and hands it to the suite as
a JSON file (``--qnprov-target``). Host-state checks go through the testinfra
``backend``; network probes go to ``endpoints``, which are always addresses of the
inventory's own host: the lab's loopback-published ports, or the host's own public
ports for real hosts.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qnprov.errors import ConfigError

#: Service name -> (standard port, STARTTLS protocol for testssl or None for implicit TLS/plain).
SERVICES: dict[str, tuple[int, str | None]] = {
    "smtp": (25, "smtp"),
    "submission": (587, "smtp"),
    "submissions": (465, None),
    "imap": (143, "imap"),
    "imaps": (993, None),
    "sieve": (4190, "sieve"),
    "ldaps": (636, None),
    "https": (443, None),  # MTA-STS policy (roles/mta_sts)
}

#: Ports a mail host may expose (controls.md: firewall allowlist): ssh and the
#: container ports above that face clients. The lab's other published ports
#: (imap, ldaps) are declared exceptions (``VerifyTarget.extra_tcp_ports``).
BASELINE_TCP_PORTS: frozenset[int] = frozenset({22, 25, 465, 587, 993, 4190, 443})

#: Client-facing ports where the gate also forbids MEDIUM testssl findings.
STRICT_TLS_SERVICES: frozenset[str] = frozenset({"submission", "submissions", "imaps"})


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(gt=0, lt=65536)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


#: Local part of verify's own probe address (roles/postfix ``postfix_verify_probe_local_part``): a
#: role-table alias in every hosted domain, never an LDAP account, so no roster import disables it.
DEFAULT_PROBE_LOCAL_PART = "qnprov-verify-probe"


def probe_recipient(variables: dict[str, Any], domain: str) -> str:
    """``qnprov_verify_probe_recipient``, else the postfix role's probe address at ``domain``."""
    explicit = variables.get("qnprov_verify_probe_recipient")
    if explicit:
        return str(explicit)
    local_part = variables.get("postfix_verify_probe_local_part", DEFAULT_PROBE_LOCAL_PART)
    if not local_part:
        raise ConfigError("postfix_verify_probe_local_part is empty: set qnprov_verify_probe_recipient "
                          "to an address the MX accepts")
    return f"{local_part}@{domain}"


class VerifyTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    backend: str
    sudo: bool = False
    lab: bool = False
    mail_hostname: str
    domain: str
    hosted_domains: list[str] = Field(default_factory=list)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    ca_file: str | None = None
    probe_recipient: str | None = None
    extra_tcp_ports: list[int] = Field(default_factory=list)
    dkim_selector: str | None = None
    ldap_base_dn: str | None = None
    #: Scanner findings accepted by active waivers: {control id: {finding id: reason}}.
    accepted_findings: dict[str, dict[str, str]] = Field(default_factory=dict)

    def endpoint(self, service: str) -> Endpoint:
        try:
            return self.endpoints[service]
        except KeyError:
            raise ConfigError(f"host {self.name} has no {service} endpoint to probe") from None

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> VerifyTarget:
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            raise ConfigError(f"bad verify target file {path}: {exc}") from exc


def parse_endpoint(value: object, default_host: str = "127.0.0.1") -> Endpoint:
    """Accept ``10025``, ``"127.0.0.1:10025"``, ``"smtp://127.0.0.1:10025"`` or ``{host, port}``."""
    if isinstance(value, bool):
        raise ConfigError(f"not an endpoint: {value!r}")
    if isinstance(value, int):
        return Endpoint(host=default_host, port=value)
    if isinstance(value, dict):
        host = str(value.get("host") or value.get("address") or default_host)
        port = value.get("port")
        if not isinstance(port, int):
            raise ConfigError(f"endpoint {value!r} has no integer port")
        return Endpoint(host=host, port=port)
    if isinstance(value, str):
        text = value.split("://", 1)[-1].rstrip("/")
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ConfigError(f"endpoint {value!r} is not host:port")
        return Endpoint(host=host.strip("[]") or default_host, port=int(port_text))
    raise ConfigError(f"not an endpoint: {value!r}")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
