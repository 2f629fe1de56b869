"""``qnprov push tls``: a new certificate and key on every host that serves TLS, checked first.

**Checked on the controller, before any host is touched** (:func:`check_material`): the key
belongs to the certificate; the certificate and any intermediates chain up to the CA the
inventory trusts (``common_lab_ca_dir``/ca.crt with ``common_tls_source: lab_ca``, else
``common_tls_ca_src``); the certificate names every target host the way roles/common issues
it (``common_tls_fqdn`` and ``common_tls_extra_sans``); it is valid now (not before its
notBefore, not after its notAfter). Any refusal names the problem and nothing is written.

**What is written** (:func:`host_files`) is what the roles write, byte for byte, with their
owners and modes, so a later ``qnprov deploy --check`` finds nothing to change:

* roles/common: ``qnprov_tls_cert_file`` (the chain, root 0644) and ``qnprov_tls_key_file``
  (root 0600). With ``common_tls_source: files`` the chain is the ``--cert`` file's bytes
  followed by the ``--chain`` file's, and the key the ``--key`` file's bytes: the inventory's
  ``common_tls_cert_src``/``common_tls_key_src`` are the truth and must hold those same bytes
  (the result says when they do not). With ``lab_ca`` the chain is leaf + lab CA, as the role
  writes it, plus the bare leaf (``cert.pem``) and a signing request (``host.csr``) for the
  new key with the role's subject and extensions, so the role's re-run keeps the certificate;
* roles/openldap (group ``directory``): slapd's copy of the key (openldap 0400) and
  ``cert.sha1``, the checksum by which the role knows which chain slapd was started with.

**One transaction per host** (:func:`push_host_tls`): each file is staged beside itself
(``.<name>.qnprov-new``) with its owner and mode, the staged pair is validated on the host
(openssl reads both, and the key's public half is the certificate's), the live files are kept
as ``.<name>.qnprov-prev``, the stage is renamed in; then Postfix, Dovecot and nginx are
reloaded and slapd restarted (it reads its certificate only at start, as the role's handler
knows), and every TLS endpoint is probed from the controller until it serves the new
certificate (sha256 of the DER). A service that does not come back, or an endpoint that does
not serve the new certificate, puts the previous files back, reloads again, and fails the host.

The private key never leaves this module as text: diffs show ``(secret, N bytes)``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shlex
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qnprov import paths
from qnprov.errors import ConfigError, InputError
from qnprov.inventory import Inventory
from qnprov.push.apply import HostResult
from qnprov.push.remote import Remote, connect
from qnprov.push.run import OnHost, PushResult

COMMON_DIR = paths.ROLES_DIR / "common"
OPENLDAP_DIR = paths.ROLES_DIR / "openldap"
#: The hosts roles/common runs on (playbooks/site.yml): every one holds the TLS material.
TLS_GROUP = "mail_all"
#: Container/standard port -> STARTTLS protocol (None: TLS from the first byte).
PROBE_PORTS: dict[int, str | None] = {25: "smtp", 587: "smtp", 465: None, 993: None, 636: None, 443: None}
PROBE_TIMEOUT = 20.0


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


def _public(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _subject(cert: x509.Certificate) -> str:
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


def _load_ca(path: str) -> tuple[x509.Certificate, bytes]:
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
    if _public(material.key.public_key()) != _public(leaf.public_key()):
        raise InputError(f"the key does not match the certificate ({_subject(leaf)}): "
                         "it was issued for another key")
    if now < leaf.not_valid_before_utc:
        raise InputError(f"the certificate ({_subject(leaf)}) is not valid yet: notBefore is "
                         f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    if now > leaf.not_valid_after_utc:
        raise InputError(f"the certificate ({_subject(leaf)}) has expired: notAfter was "
                         f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    for cert in material.chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise InputError(f"the chain certificate {_subject(cert)} is not valid now "
                             f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})")
    for ca_path in sorted({h.ca_path for h in hosts}):
        ca, _ = _load_ca(ca_path)
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
                                 f"{_subject(ca)}): {_subject(current)} was not issued by it") from None
            raise InputError(f"the chain is broken: {_subject(current)} was not issued by the next "
                             f"certificate, {_subject(cert)} ({type(exc).__name__})") from None
        current = cert
    if current.public_bytes(serialization.Encoding.DER) != ca_der:  # pragma: no cover - loop returns or raises
        raise InputError(f"the certificate chain does not lead to {ca_path}")


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class TlsFile:
    path: str
    content: bytes
    owner: str = "root"
    group: str = "root"
    mode: str = "644"
    secret: bool = False
    kind: str = "cert"  # cert, key, csr, text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def _csr(material: Material, host: HostTls) -> bytes:
    """The role's CSR for the new key: the role's openssl_csr finds it current (subject, extensions, key)."""
    names: list[x509.GeneralName] = []
    for entry in host.sans:
        kind, _, value = entry.partition(":")
        if kind.upper() == "IP":
            import ipaddress

            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        else:
            names.append(x509.DNSName(value))
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host.fqdn)]))
               .add_extension(x509.SubjectAlternativeName(names), critical=False)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    algorithm = None if isinstance(material.key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    return builder.sign(material.key, algorithm).public_bytes(serialization.Encoding.PEM)


def csr_current(existing: bytes | None, material: Material, host: HostTls) -> bool:
    """Whether the host's CSR already is one for this key, subject and extensions (what openssl_csr
    accepts): an ECDSA signature differs at each signing, so bytes are not the test."""
    if not existing:
        return False
    try:
        current = x509.load_pem_x509_csr(existing)
    except ValueError:
        return False
    wanted = x509.load_pem_x509_csr(_csr(material, host))
    return (current.is_signature_valid and _public(current.public_key()) == _public(material.key.public_key())
            and current.subject == wanted.subject
            and {(e.oid.dotted_string, e.critical, e.value) for e in current.extensions}
            == {(e.oid.dotted_string, e.critical, e.value) for e in wanted.extensions})


def lab_ca_keeps(material: Material, host: HostTls) -> bool:
    """Whether roles/common's ownca signing step keeps this certificate (its subject and extensions are
    the request's, plus the key identifiers it adds)."""
    leaf = material.leaf
    wanted = x509.load_pem_x509_csr(_csr(material, host))
    skip = {x509.SubjectKeyIdentifier.oid.dotted_string, x509.AuthorityKeyIdentifier.oid.dotted_string}
    have = {(e.oid.dotted_string, e.critical, e.value) for e in leaf.extensions if e.oid.dotted_string not in skip}
    oids = {e.oid.dotted_string for e in leaf.extensions}
    return (leaf.subject == wanted.subject and skip <= oids
            and have == {(e.oid.dotted_string, e.critical, e.value) for e in wanted.extensions})


def _with_newline(data: bytes) -> bytes:
    return data if not data or data.endswith(b"\n") else data + b"\n"


def fullchain(material: Material, host: HostTls) -> bytes:
    """The chain file, as the role would write it for this material."""
    if host.source == "lab_ca":
        _, ca_pem = _load_ca(host.ca_path)
        return material.leaf_pem.strip() + b"\n" + ca_pem.strip() + b"\n"
    return _with_newline(material.cert_bytes) + material.chain_bytes


def host_files(material: Material, host: HostTls) -> list[TlsFile]:
    chain = fullchain(material, host)
    files = [TlsFile(host.cert_file, chain), TlsFile(host.key_file, material.key_pem, mode="600", secret=True,
                                                     kind="key")]
    if host.source == "lab_ca":
        files += [TlsFile(host.leaf_file, material.leaf_pem), TlsFile(host.csr_file, _csr(material, host), kind="csr")]
    if host.slapd_key_file:
        files += [TlsFile(host.slapd_key_file, material.key_pem, owner="openldap", group="openldap", mode="400",
                          secret=True, kind="key"),
                  TlsFile(f"{PurePosixPath(host.slapd_key_file).parent}/cert.sha1",
                          hashlib.sha1(chain, usedforsecurity=False).hexdigest().encode() + b"\n",
                          group="openldap", mode="640", kind="text")]
    return files


def inventory_notes(material: Material, host: HostTls) -> list[str]:
    """Where the next deploy would undo the push: files mode's sources, lab_ca's re-signing."""
    if host.source == "lab_ca":
        return [] if lab_ca_keeps(material, host) else [
            "the lab CA tasks will re-issue this certificate at the next deploy: its subject or extensions "
            "differ from the role's request (CN=common_tls_fqdn; SANs, keyUsage digitalSignature critical, "
            "extendedKeyUsage serverAuth, subject and authority key identifiers)"]
    notes = []
    for variable, path, wanted in (("common_tls_cert_src", host.cert_src, fullchain(material, host)),
                                   ("common_tls_key_src", host.key_src, material.key_pem)):
        try:
            same = Path(path).read_bytes() == wanted
        except OSError:
            same = False
        if not same:
            notes.append(f"{variable} ({path or 'unset'}) does not hold the pushed bytes: point it at them "
                         "before the next deploy, or the deploy puts the previous certificate back")
    return notes


def _describe(data: bytes | None) -> str:
    if data is None:
        return "missing"
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        return f"sha256 {hashlib.sha256(data).hexdigest()[:16]}"
    return (f"{_subject(cert)}, serial {cert.serial_number:x}, notAfter {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"sha256 {cert.fingerprint(hashes.SHA256()).hex()[:16]}")


def file_diff(wanted: TlsFile, before: bytes | None) -> str:
    """One line per file: certificates by subject and fingerprint, secrets by their size only."""
    if wanted.secret:
        return f"{wanted.path}: (secret, {len(wanted.content)} bytes)\n"
    if wanted.kind == "csr":
        return f"{wanted.path}: signing request for the new key\n"
    if wanted.kind == "text":
        old = before.decode("utf-8", "replace").strip() if before is not None else "missing"
        return f"{wanted.path}: {old} -> {wanted.content.decode().strip()}\n"
    return f"{wanted.path}: {_describe(before)} -> {_describe(wanted.content)}\n"


# ----------------------------------------------------------------------------- one host


def _q(value: str) -> str:
    return shlex.quote(value)


def _tail(text: str, lines: int = 4) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _stage_name(path: str, suffix: str) -> str:
    p = PurePosixPath(path)
    return f"{p.parent}/.{p.name}.qnprov-{suffix}"


def _state(remote: Remote, paths_: list[str]) -> dict[str, tuple[str, str] | None]:
    from qnprov.push.apply import current_state

    return current_state(remote, paths_)


def _read(remote: Remote, path: str) -> bytes | None:
    from qnprov.push.apply import read_file

    return read_file(remote, path)


def fetch_served(address: str, port: int, starttls: str | None, server_name: str,
                 timeout: float = 10.0) -> bytes:
    """The DER certificate an endpoint serves (STARTTLS for SMTP), without trusting it: the
    caller compares fingerprints."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as raw:
        if starttls == "smtp":
            reader = raw.makefile("rb")

            def reply() -> str:
                while True:
                    line = reader.readline().decode("ascii", "replace")
                    if not line:
                        raise OSError("connection closed during the SMTP greeting")
                    if len(line) < 4 or line[3] != "-":
                        return line

            if not reply().startswith("220"):
                raise OSError("no SMTP greeting")
            raw.sendall(b"EHLO qnprov-push-tls.invalid\r\n")
            if not reply().startswith("250"):
                raise OSError("EHLO refused")
            raw.sendall(b"STARTTLS\r\n")
            answer = reply()
            if not answer.startswith("220"):
                raise OSError(f"STARTTLS refused: {answer.strip()}")
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("no certificate served")
    return der


def probe(host: HostTls, fingerprint: str, *, deadline: float = PROBE_TIMEOUT) -> list[str]:
    """Every endpoint of the host, until each serves ``fingerprint`` or the deadline passes;
    the endpoints that did not, with why."""
    pending = {(a, p): s for a, p, s in host.probes}
    why: dict[tuple[str, int], str] = {}
    end = time.monotonic() + deadline
    while pending:
        for (address, port), starttls in list(pending.items()):
            try:
                served = hashlib.sha256(fetch_served(address, port, starttls, host.fqdn)).hexdigest()
            except (OSError, ssl.SSLError) as exc:
                why[(address, port)] = f"{type(exc).__name__}: {exc}"
                continue
            if served == fingerprint:
                del pending[(address, port)]
                why.pop((address, port), None)
            else:
                why[(address, port)] = f"serves sha256 {served[:16]}"
        if not pending or time.monotonic() > end:
            break
        time.sleep(0.5)
    return [f"{address}:{port} {why.get((address, port), 'no answer')}" for address, port in sorted(pending)]


@dataclass
class TlsHostResult(HostResult):
    probed: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        doc = super().as_json()
        doc["probed"] = self.probed
        return doc


def _restart_services(remote: Remote, services: Sequence[str]) -> tuple[bool, str]:
    steps = []
    for service in services:
        verb = "restart" if service == "slapd" else "reload"
        steps.append(f"systemctl {verb} {service} && systemctl is-active --quiet {service}")
    if not steps:
        return True, ""
    ran = remote.run(" && ".join(steps) + " 2>&1")
    return ran.ok, _tail(ran.stdout + ran.stderr)


def push_host_tls(remote: Remote, material: Material, host: HostTls, *, check: bool = False, diff: bool = False,
                  probe_fn: Callable[[HostTls, str], list[str]] = probe) -> TlsHostResult:
    started = time.monotonic()
    result = TlsHostResult(remote.name, "unchanged")
    try:
        _push_tls(remote, material, host, result, check=check, diff=diff, probe_fn=probe_fn)
    except OSError as exc:
        result.status, result.message = "failed", str(exc)
    result.seconds = time.monotonic() - started
    return result


def _push_tls(remote: Remote, material: Material, host: HostTls, result: TlsHostResult, *, check: bool, diff: bool,
              probe_fn: Callable[[HostTls, str], list[str]]) -> None:
    files = host_files(material, host)
    state = _state(remote, [f.path for f in files])
    for index, f in enumerate(files):
        wanted_state = (f"{f.owner}:{f.group}:{f.mode}", f.sha256)
        if f.kind == "csr" and state[f.path] is not None and state[f.path] != wanted_state:
            existing = _read(remote, f.path)
            if existing is not None and csr_current(existing, material, host):
                files[index] = dataclasses.replace(f, content=existing)
    changed = [f for f in files if state[f.path] != (f"{f.owner}:{f.group}:{f.mode}", f.sha256)]
    result.files = [f.path for f in changed]
    notes = inventory_notes(material, host)
    if not changed:
        result.message = "; ".join(["the certificate is already in place", *notes])
        return
    result.status = "changed"
    if check or diff:
        result.diff = "".join(file_diff(f, None if f.secret else _read(remote, f.path)) for f in changed)
    if check:
        result.message = "; ".join(["would change", *notes])
        return
    # Stage every file beside itself, with its owner and mode.
    for f in changed:
        staged = _stage_name(f.path, "new")
        remote.run(f"mkdir -p -- {_q(str(PurePosixPath(f.path).parent))}")
        remote.put(f.content, staged)
        ran = remote.run(f"chown {f.owner}:{f.group} -- {_q(staged)} && chmod 0{f.mode} -- {_q(staged)}")
        if not ran.ok:
            _drop(remote, changed)
            raise OSError(f"cannot set owner and mode of {staged}: {_tail(ran.stderr)}")
    # Validate the staged pair on the host.
    cert = next(f for f in files if f.path == host.cert_file)
    key = next(f for f in files if f.path == host.key_file)
    cert_path = _stage_name(cert.path, "new") if cert in changed else cert.path
    key_path = _stage_name(key.path, "new") if key in changed else key.path
    ran = remote.run(
        f"a=$(openssl x509 -in {_q(cert_path)} -noout -pubkey) && b=$(openssl pkey -in {_q(key_path)} -pubout) "
        f"&& [ \"$a\" = \"$b\" ] && echo pair-ok")
    if not ran.ok or "pair-ok" not in ran.stdout:
        _drop(remote, changed)
        raise OSError("the staged certificate and key failed openssl's check on the host; the running files were kept")
    # Publish: keep the live files, rename the stage in.
    publish = " && ".join(
        f"{{ if [ -f {_q(f.path)} ]; then cp -a -- {_q(f.path)} {_q(_stage_name(f.path, 'prev'))}; "
        f"else rm -f -- {_q(_stage_name(f.path, 'prev'))}; fi; }} "
        f"&& mv -f -- {_q(_stage_name(f.path, 'new'))} {_q(f.path)}"
        for f in changed)
    ran = remote.run(publish)
    if not ran.ok:
        _roll_back(remote, changed, host.services)
        raise OSError(f"publishing failed, previous files restored: {_tail(ran.stderr)}")
    ok, output = _restart_services(remote, host.services)
    failures = [] if not ok else probe_fn(host, material.fingerprint)
    if not ok or failures:
        _roll_back(remote, changed, host.services)
        why = f"a service did not come back ({output})" if not ok else "not served: " + "; ".join(failures)
        raise OSError(f"{why}; previous files restored and services reloaded")
    result.probed = [f"{a}:{p}" for a, p, _ in host.probes]
    remote.run(" ; ".join(f"rm -f -- {_q(_stage_name(f.path, 'prev'))}" for f in changed))
    result.action = "reload " + ", ".join(host.services) if host.services else None
    result.message = "; ".join([f"{len(changed)} file(s) written, {len(host.probes)} endpoint(s) serve "
                                f"sha256 {material.fingerprint[:16]}", *notes])


def _drop(remote: Remote, files: Sequence[TlsFile]) -> None:
    remote.run(" ; ".join(f"rm -f -- {_q(_stage_name(f.path, 'new'))}" for f in files))


def _roll_back(remote: Remote, files: Sequence[TlsFile], services: Sequence[str]) -> None:
    remote.run(" ; ".join(
        f"if [ -f {_q(_stage_name(f.path, 'prev'))} ]; then mv -f -- {_q(_stage_name(f.path, 'prev'))} {_q(f.path)}; "
        f"else rm -f -- {_q(f.path)}; fi ; rm -f -- {_q(_stage_name(f.path, 'new'))}" for f in files))
    _restart_services(remote, services)


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


def push_tls(inventory: Inventory, material: Material, *, limit: str | None = None, check: bool = False,
             diff: bool = False, on_host: OnHost | None = None,
             prepared: dict[str, HostTls] | None = None) -> PushResult:
    """Check (unless ``prepared`` says it was done), then push to every host, one transaction each."""
    import gevent

    started = time.monotonic()
    hosts = prepared if prepared is not None else prepare(inventory, material, limit)
    result = PushResult(command="tls", check=check)
    connected = connect(inventory, sorted(hosts))
    for host, why in connected.failures.items():
        result.hosts[host] = TlsHostResult(host, "failed", message=why)
        if on_host:
            on_host(result.hosts[host])

    def one(host: str) -> None:
        try:
            outcome = push_host_tls(connected.remotes[host], material, hosts[host], check=check, diff=diff)
        except Exception as exc:  # one host's surprise must not stop the others
            outcome = TlsHostResult(host, "failed", message=f"{type(exc).__name__}: {exc}")
        result.hosts[host] = outcome
        if on_host:
            on_host(outcome)

    try:
        gevent.joinall([gevent.spawn(one, host) for host in sorted(connected.remotes)], raise_error=True)
    finally:
        connected.close()
    result.seconds = time.monotonic() - started
    return result


__all__ = ["HostTls", "Material", "check_material", "host_files", "load_material", "push_tls"]
