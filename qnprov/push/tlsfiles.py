"""``qnprov push tls``, second part: the files a host gets, as the roles write them.

:func:`host_files` is the byte-for-byte content, owner and mode of every file roles/common
and roles/openldap would write for this certificate and key (see :mod:`qnprov.push.tls`);
:func:`inventory_notes` says where the next deploy would undo the push; :func:`file_diff`
shows a change without ever showing the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qnprov.push.tlscheck import HostTls, Material, load_ca, public_der, subject_text

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
    return (current.is_signature_valid and public_der(current.public_key()) == public_der(material.key.public_key())
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
        _, ca_pem = load_ca(host.ca_path)
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
    return (f"{subject_text(cert)}, serial {cert.serial_number:x}, notAfter {cert.not_valid_after_utc:%Y-%m-%d}, "
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
