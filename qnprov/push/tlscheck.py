"""``qnprov push tls``, first half: the operator's files read, and checked on the controller.

Nothing here touches a host. :func:`prepare` reads how roles/common and roles/openldap handle
TLS on every target host (:func:`host_tls`) and refuses, naming the problem, what must not
reach the services (:func:`check_material`): a key that is not the certificate's, a chain
that does not lead to the CA the inventory trusts, a certificate that does not name a host
as the role names it, or one that is not valid now. :mod:`qnprov.push.tls` does the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from qnprov import paths
from qnprov.errors import ConfigError, InputError
from qnprov.inventory import Inventory

COMMON_DIR = paths.ROLES_DIR / "common"
OPENLDAP_DIR = paths.ROLES_DIR / "openldap"
#: The hosts roles/common runs on (playbooks/site.yml): every one holds the TLS material.
TLS_GROUP = "mail_all"
#: Container/standard port -> STARTTLS protocol (None: TLS from the first byte).
PROBE_PORTS: dict[int, str | None] = {25: "smtp", 587: "smtp", 465: None, 993: None, 636: None, 443: None}


# ----------------------------------------------------------------------------- material


@dataclass(frozen=True)
class Material:
    """The operator's files, parsed; ``key_pem`` is the key file's bytes and is never shown."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: Any
    cert_bytes: bytes
    chain_bytes: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return self.leaf.fingerprint(hashes.SHA256()).hex()

    @property
    def leaf_pem(self) -> bytes:
        return self.leaf.public_bytes(serialization.Encoding.PEM)


def _certs(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InputError(f"{what} holds no readable PEM certificate ({exc})") from None
    return found


def load_material(cert: Path, key: Path, chain: Path | None = None) -> Material:
    """Read the files; InputError when one is missing or unreadable (never quoting the key)."""
    try:
        cert_bytes = cert.read_bytes()
        key_pem = key.read_bytes()
        chain_bytes = chain.read_bytes() if chain else b""
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename}: {exc.strerror}") from None
    certs = _certs(cert_bytes, f"--cert {cert}")
    extra = _certs(chain_bytes, f"--chain {chain}") if chain else []
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise InputError(f"--key {key} is encrypted: give the key without a passphrase "
                         "(it is written to the hosts as the services read it)") from None
    except ValueError:
        raise InputError(f"--key {key} holds no readable PEM private key") from None
    return Material(certs[0], tuple(certs[1:] + extra), private, cert_bytes, chain_bytes, key_pem)


def public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def subject_text(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


@dataclass(frozen=True)
class HostTls:
    """How roles/common and roles/openldap handle TLS on one host (from the inventory)."""

    host: str
    source: str  # "lab_ca" or "files"
    fqdn: str
    sans: tuple[str, ...]  # OpenSSL notation, as the role puts them in the CSR: ("DNS:x", "IP:y")
    ca_path: str  # on the controller
    cert_file: str
    key_file: str
    ca_file: str
    cert_src: str = ""
    key_src: str = ""
    slapd_key_file: str | None = None  # set on directory hosts
    services: tuple[str, ...] = ()
    probes: tuple[tuple[str, int, str | None], ...] = ()  # (address, port, starttls)

    @property
    def leaf_file(self) -> str:
        return f"{PurePosixPath(self.cert_file).parent}/cert.pem"

    @property
    def csr_file(self) -> str:
        return f"{PurePosixPath(self.key_file).parent}/host.csr"


def _probes(inventory: Inventory, host: str, groups: set[str],
            hostvars: dict[str, Any]) -> list[tuple[str, int, str | None]]:
    target = inventory.ssh_target(host)
    publish = hostvars.get("qnprov_lab_publish")
    if isinstance(publish, dict):  # the lab: container port -> host loopback port
        return [(target.hostname, int(ports[0]), PROBE_PORTS[int(ports[1])])
                for ports in publish.values() if int(ports[1]) in PROBE_PORTS]
    ports: list[int] = []
    if "mta" in groups:
        ports += [25, 587, 465]
    if _serves_https(inventory, host, groups):
        ports.append(443)
    if groups & {"mta", "store"}:
        ports.append(993)
    if "directory" in groups:
        ports.append(636)
    return [(target.hostname, port, PROBE_PORTS[port]) for port in sorted(ports)]


def _serves_https(inventory: Inventory, host: str, groups: set[str]) -> bool:
    """nginx runs where roles/mta_sts (``mta``) or roles/webmail (``webmail``) is enabled."""
    if "mta" in groups and inventory.role_vars(host, paths.ROLES_DIR / "mta_sts").value("mta_sts_enabled"):
        return True
    return "webmail" in groups and bool(inventory.role_vars(host, paths.ROLES_DIR / "webmail").value("webmail_enabled"))


def host_tls(inventory: Inventory, host: str) -> HostTls:
    common = inventory.role_vars(host, COMMON_DIR)
    groups = {g for g, members in inventory.groups().items() if host in members}
    source = str(common.value("common_tls_source"))
    if source == "lab_ca":
        ca_path = str(Path(str(common.value("common_lab_ca_dir"))).expanduser() / "ca.crt")
    elif source == "files":
        ca_path = str(common.value("common_tls_ca_src") or "")
        if not ca_path:
            raise ConfigError(f"{host}: common_tls_source is files but common_tls_ca_src is empty: "
                              "the push checks the chain against the CA the inventory trusts")
    else:
        raise ConfigError(f"{host}: common_tls_source {source!r} is neither lab_ca nor files")
    fqdn = str(common.value("common_tls_fqdn")).strip()
    sans = tuple(["DNS:" + fqdn] + [str(s) for s in common.value("common_tls_extra_sans") or []])
    services = []
    if "mta" in groups:
        services.append("postfix")
    if _serves_https(inventory, host, groups):
        services.append("nginx")
    if groups & {"mta", "store"}:
        services.append("dovecot")
    slapd_key = None
    if "directory" in groups:
        services.append("slapd")
        slapd_key = str(inventory.role_vars(host, OPENLDAP_DIR).value("openldap_tls_key_file"))
    return HostTls(
        host=host, source=source, fqdn=fqdn, sans=sans, ca_path=ca_path,
        cert_file=str(common.value("qnprov_tls_cert_file")), key_file=str(common.value("qnprov_tls_key_file")),
        ca_file=str(common.value("qnprov_tls_ca_file")),
        cert_src=str(common.value("common_tls_cert_src") or ""), key_src=str(common.value("common_tls_key_src") or ""),
        slapd_key_file=slapd_key, services=tuple(services),
        probes=tuple(_probes(inventory, host, groups, inventory.host_vars(host))))


def load_ca(path: str) -> tuple[x509.Certificate, bytes]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA the inventory trusts, {path}: {exc.strerror}") from None
    return _certs(data, f"the inventory's CA {path}")[0], data


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {"DNS:" + name.lower() for name in san.get_values_for_type(x509.DNSName)}
    found |= {"IP:" + str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return found


def _covers(names: set[str], wanted: str) -> bool:
    kind, _, value = wanted.partition(":")
    if kind.upper() == "IP":
        return f"IP:{value}" in names
    value = value.lower().rstrip(".")
    if f"DNS:{value}" in names:
        return True
    _, _, rest = value.partition(".")
    return bool(rest) and f"DNS:*.{rest}" in names


def check_material(material: Material, hosts: Sequence[HostTls], *, now: dt.datetime | None = None) -> None:
    """Refuse (InputError, naming the problem) what the services must not be given."""
    now = now or dt.datetime.now(dt.UTC)
    leaf = material.leaf
    if public_der(material.key.public_key()) != public_der(leaf.public_key()):
        raise InputError(f"the key does not match the certificate ({subject_text(leaf)}): "
                         "it was issued for another key")
    if now < leaf.not_valid_before_utc:
        raise InputError(f"the certificate ({subject_text(leaf)}) is not valid yet: notBefore is "
                         f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    if now > leaf.not_valid_after_utc:
        raise InputError(f"the certificate ({subject_text(leaf)}) has expired: notAfter was "
                         f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    for cert in material.chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise InputError(f"the chain certificate {subject_text(cert)} is not valid now "
                             f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})")
    for ca_path in sorted({h.ca_path for h in hosts}):
        ca, _ = load_ca(ca_path)
        _check_chain(material, ca, ca_path)
    for host in hosts:
        names = _names(leaf)
        missing = [want for want in host.sans if not _covers(names, want)]
        if missing:
            raise InputError(f"the certificate does not name host {host.host}: its subjectAltName "
                             f"({', '.join(sorted(names)) or 'none'}) lacks {', '.join(missing)} "
                             "(common_tls_fqdn and common_tls_extra_sans)")
        if host.source == "lab_ca" and not (isinstance(material.key, ec.EllipticCurvePrivateKey)
                                            and isinstance(material.key.curve, ec.SECP256R1)):
            raise InputError(f"{host.host} takes its key from the lab CA tasks (common_tls_source: lab_ca), which "
                             "keep an ECC P-256 key and would replace this one at the next deploy: give a P-256 key")


def _check_chain(material: Material, ca: x509.Certificate, ca_path: str) -> None:
    current = material.leaf
    ca_der = ca.public_bytes(serialization.Encoding.DER)
    for cert in [*material.chain, ca]:
        if current.public_bytes(serialization.Encoding.DER) == ca_der:
            return
        try:
            current.verify_directly_issued_by(cert)
        except (InvalidSignature, ValueError, TypeError) as exc:
            if cert is ca:
                raise InputError(f"the certificate chain does not lead to the CA the inventory trusts ({ca_path}, "
                                 f"{subject_text(ca)}): {subject_text(current)} was not issued by it") from None
            raise InputError(f"the chain is broken: {subject_text(current)} was not issued by the next "
                             f"certificate, {subject_text(cert)} ({type(exc).__name__})") from None
        current = cert
    if current.public_bytes(serialization.Encoding.DER) != ca_der:  # pragma: no cover - loop returns or raises
        raise InputError(f"the certificate chain does not lead to {ca_path}")


# ----------------------------------------------------------------------------- the inventory


def target_hosts(inventory: Inventory, limit: str | None) -> list[str]:
    groups = inventory.groups()
    hosts = inventory.hosts_matching(TLS_GROUP) if TLS_GROUP in groups else inventory.hosts
    if limit:
        chosen = set(inventory.hosts_matching(limit))
        hosts = [h for h in hosts if h in chosen]
    if not hosts:
        raise ConfigError(f"no host of {inventory.source} matches --limit {limit}")
    return sorted(hosts)


def prepare(inventory: Inventory, material: Material, limit: str | None) -> dict[str, HostTls]:
    """Every host's settings, and every check, before any host is touched."""
    hosts = {h: host_tls(inventory, h) for h in target_hosts(inventory, limit)}
    check_material(material, list(hosts.values()))
    return hosts
