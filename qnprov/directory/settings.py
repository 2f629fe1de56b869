"""Where the directory is and who writes to it: from an inventory, the lab, or options.

The inventory's ``all`` group variables, read by :mod:`qnprov.inventory` (literal values
only; templated and vault values need a play to render), and for the lab the status
file ``$QNPROV_STATE_DIR/lab.json`` that ``qnprov lab status --json`` writes.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qnprov import inventory as inventory_mod
from qnprov import paths
from qnprov.directory.ldapio import LdapSettings
from qnprov.errors import ConfigError


@dataclass(frozen=True)
class ConnectionOptions:
    inventory: str | None = None
    ldap_url: str | None = None
    base_dn: str | None = None
    bind_dn: str | None = None
    bind_password_file: Path | None = None
    ca_cert: Path | None = None
    domain: str | None = None


def _reachable_service_uris(variables: dict[str, Any]) -> list[str]:
    """The services' LDAP URIs (``qnprov_ldap_uris``, else ``qnprov_ldap_uri``) that name real hosts.

    The mail services may use the host's own loopback; the operator's machine cannot.
    """
    uris = variables.get("qnprov_ldap_uris")
    if not isinstance(uris, list):
        uris = [variables.get("qnprov_ldap_uri")]
    reachable = []
    for uri in uris:
        if not isinstance(uri, str):
            continue
        host = urllib.parse.urlparse(uri).hostname or ""
        if not (host in ("", "localhost") or host.startswith("127.") or host == "::1"):
            reachable.append(uri)
    return reachable


def split_urls(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """LDAP URLs from a list, or from one string separated by blanks or commas (as ``ldapsearch -H``)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(url for item in items for url in str(item).replace(",", " ").split())


def _read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the bind password file {path}: {exc.strerror}") from exc
    password = text.strip("\r\n")
    if not password:
        raise ConfigError(f"the bind password file {path} is empty")
    return password


def resolve_settings(options: ConnectionOptions) -> LdapSettings:
    """Inventory values first, the lab's status file over them, explicit options over both."""
    url: str | list[str] | None = None
    base_dn = bind_dn = password = domain = tls_name = None
    ca_cert: Path | None = None
    if options.inventory:
        inventory = inventory_mod.load(paths.resolve_inventory(options.inventory))
        variables = inventory.literal_group_vars("all")
        base_dn = variables.get("qnprov_ldap_base_dn")
        domain = variables.get("qnprov_domain")
        url = variables.get("qnprov_provisioning_ldap_url") or _reachable_service_uris(variables)
        if inventory.is_lab:
            status_file = paths.state_dir() / "lab.json"
            if not status_file.is_file():
                raise ConfigError(f"{status_file} is missing: start the lab (qnprov lab up) or give --ldap-url")
            try:
                lab = json.loads(status_file.read_text(encoding="utf-8"))
                ldap = lab["ldap"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{status_file}: not a lab status document ({exc})") from exc
            # A multi-host lab may list every provider ("urls"), in preference order.
            url, base_dn = ldap.get("urls") or ldap.get("url") or url, ldap.get("base_dn") or base_dn
            bind_dn, password = ldap.get("bind_dn"), ldap.get("bind_password")
            ca_cert = Path(lab["ca_cert"]) if lab.get("ca_cert") else None
            domain = lab.get("domain") or domain
            tls_name = _lab_server_name(lab, domain)
    urls = split_urls(options.ldap_url or url)
    base_dn = options.base_dn or base_dn
    domain = options.domain or domain
    ca_cert = options.ca_cert or ca_cert
    if not base_dn:
        raise ConfigError("no base DN: give --base-dn or an inventory with qnprov_ldap_base_dn")
    bind_dn = options.bind_dn or bind_dn or f"cn=qnprov,ou=services,{base_dn}"
    if options.bind_password_file:
        password = _read_password(options.bind_password_file)
    if not urls:
        raise ConfigError("no LDAP URL: give --ldap-url (or qnprov_provisioning_ldap_url in the inventory)")
    if not password:
        raise ConfigError("no bind password: give --bind-password-file")
    if not domain:
        domain = ".".join(part.split("=", 1)[1] for part in base_dn.split(",") if part.lower().startswith("dc="))
    return LdapSettings(url=urls[0], base_dn=base_dn, bind_dn=bind_dn, bind_password=password,
                        ca_cert=ca_cert, domain=domain, tls_server_name=tls_name, fallback_urls=urls[1:])


def _lab_server_name(lab: dict[str, Any], domain: str | None) -> str | None:
    """The lab host's certificate name: ``hostname`` if the status has it, else ``<name>.<domain>``."""
    hosts = lab.get("hosts") or []
    if not hosts or not isinstance(hosts[0], dict):
        return None
    first = hosts[0]
    if first.get("hostname"):
        return str(first["hostname"])
    return f"{first['name']}.{domain}" if first.get("name") and domain else None
