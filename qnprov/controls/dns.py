"""DNS records every hosted domain must publish (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, TLSA).

Record building is pure (:func:`build_records`); reading the deployed DKIM key and the
host certificate from a host or from files is the edge (:func:`read_host_material`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qnprov.errors import ConfigError, InputError

DEFAULT_TTL = 3600
DKIM_DIR = "/var/lib/rspamd/dkim"
MTA_STS_MAX_AGE = 604800  # one week, as RFC 8461 suggests for enforce mode
DmarcPolicy = Literal["quarantine", "reject"]
MtaStsMode = Literal["enforce", "testing"]
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SELECTOR = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$", re.IGNORECASE)


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str
    ttl: int = DEFAULT_TTL
    purpose: str = ""


@dataclass(frozen=True)
class DkimKey:
    selector: str
    public_key_b64: str
    key_type: str = "rsa"


@dataclass(frozen=True)
class DomainMail:
    domain: str
    mx_hosts: tuple[str, ...]
    dkim: DkimKey | None
    tlsa_sha256: dict[str, str]  # mx host -> SPKI sha256 hex
    report_mailbox: str
    dmarc_policy: DmarcPolicy = "quarantine"
    mta_sts_mode: MtaStsMode = "enforce"


def check_domain(domain: str) -> str:
    cleaned = domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(cleaned):
        raise InputError(f"{domain!r} is not a domain name", [{"field": "domain", "value": domain}])
    return cleaned


def parse_dkim_txt(text: str, *, selector_hint: str | None = None) -> DkimKey:
    """Read rspamd's ``<domain>.<selector>.txt`` (zone-file TXT) or a PEM public key."""
    if "BEGIN PUBLIC KEY" in text:
        body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
        if not selector_hint:
            raise InputError("a PEM public key needs the DKIM selector")
        return DkimKey(selector_hint, body)
    quoted = "".join(re.findall(r'"([^"]*)"', text))
    fields = dict(part.strip().split("=", 1) for part in quoted.split(";") if "=" in part)
    public = fields.get("p", "").replace(" ", "")
    if not public:
        raise InputError("DKIM TXT has no p= public key")
    try:
        base64.b64decode(public, validate=True)
    except ValueError as exc:
        raise InputError("DKIM p= value is not base64") from exc
    owner = text.strip().split(None, 1)[0] if text.strip() else ""
    selector = selector_hint or owner.split("._domainkey", 1)[0]
    if not _SELECTOR.match(selector or ""):
        raise InputError(f"cannot tell the DKIM selector from {owner!r}")
    return DkimKey(selector, public, fields.get("k", "rsa").strip())


def spki_sha256(cert_pem: bytes) -> str:
    """TLSA 3 1 1: SHA-256 of the leaf certificate's SubjectPublicKeyInfo."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise InputError(f"not a PEM certificate: {exc}") from exc
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def mta_sts_policy(mx_hosts: tuple[str, ...], mode: MtaStsMode, max_age: int = MTA_STS_MAX_AGE) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {mx}" for mx in mx_hosts], f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"  # RFC 8461 §3.2: CRLF line endings


def mta_sts_policy_id(policy: str) -> str:
    """The ``id`` of the ``_mta-sts`` TXT record: changes whenever the policy text does."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def txt_chunks(value: str, size: int = 255) -> list[str]:
    """TXT strings are at most 255 octets each; longer values are split."""
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def build_records(mail: DomainMail) -> list[DnsRecord]:
    """Every record the domain must publish, in zone order (pure)."""
    domain = check_domain(mail.domain)
    if not mail.mx_hosts:
        raise InputError(f"{domain}: at least one MX host is needed")
    if mail.dmarc_policy not in ("quarantine", "reject"):
        raise InputError(f"DMARC policy {mail.dmarc_policy!r}: the province requires quarantine or reject")
    apex = f"{domain}."
    records = [DnsRecord(apex, "MX", f"{10 * (i + 1)} {mx}.", purpose="mail exchanger")
               for i, mx in enumerate(mail.mx_hosts)]
    records.append(DnsRecord(apex, "TXT", "v=spf1 mx -all", purpose="SPF: only our MX hosts send"))
    if mail.dkim is not None:
        records.append(DnsRecord(f"{mail.dkim.selector}._domainkey.{apex}", "TXT",
                                 f"v=DKIM1; k={mail.dkim.key_type}; p={mail.dkim.public_key_b64}",
                                 purpose="DKIM public key (from the deployed key)"))
    records.append(DnsRecord(f"_dmarc.{apex}", "TXT",
                             f"v=DMARC1; p={mail.dmarc_policy}; adkim=s; aspf=s; "
                             f"rua=mailto:{mail.report_mailbox}", purpose="DMARC policy and aggregate reports"))
    policy = mta_sts_policy(mail.mx_hosts, mail.mta_sts_mode)
    policy_id = mta_sts_policy_id(policy)
    records.append(DnsRecord(f"_mta-sts.{apex}", "TXT", f"v=STSv1; id={policy_id}",
                             purpose=f"MTA-STS (policy at https://mta-sts.{domain}/.well-known/mta-sts.txt)"))
    records.append(DnsRecord(f"_smtp._tls.{apex}", "TXT", f"v=TLSRPTv1; rua=mailto:{mail.report_mailbox}",
                             purpose="TLS-RPT reports"))
    for mx in mail.mx_hosts:
        digest = mail.tlsa_sha256.get(mx)
        if digest:
            records.append(DnsRecord(f"_25._tcp.{mx}.", "TLSA", f"3 1 1 {digest}",
                                     purpose="DANE-EE: SPKI SHA-256 of the host key (needs DNSSEC)"))
    return records


def render_zone(records: list[DnsRecord]) -> str:
    lines = []
    for record in records:
        if record.purpose:
            lines.append(f"; {record.purpose}")
        value = record.value
        if record.type == "TXT":
            value = " ".join(f'"{chunk}"' for chunk in txt_chunks(record.value))
            if len(record.value) > 255:
                value = f"( {value} )"
        lines.append(f"{record.name}\t{record.ttl}\tIN\t{record.type}\t{value}")
    return "\n".join(lines) + "\n"


def records_json(per_domain: dict[str, tuple[list[DnsRecord], str]]) -> str:
    doc: dict[str, Any] = {
        domain: {"records": [asdict(r) for r in records], "mta_sts_policy": policy}
        for domain, (records, policy) in per_domain.items()
    }
    return json.dumps(doc, indent=2)


def read_host_material(backend: str, domain: str, cert_path: str, *, sudo: bool = False) -> tuple[str | None, bytes]:
    """The deployed DKIM TXT for ``domain`` and the host certificate, read through testinfra."""
    import testinfra

    domain = check_domain(domain)
    host = testinfra.get_host(backend, sudo=sudo)
    listing = host.run(f"find {DKIM_DIR} -maxdepth 1 -name '{domain}.*.txt' -type f")
    files = sorted(listing.stdout.split())
    dkim_text = host.file(files[0]).content_string if files else None
    cert = host.file(cert_path)
    if not cert.exists:
        raise ConfigError(f"{backend}: certificate {cert_path} does not exist")
    return dkim_text, cert.content


def main(argv: list[str] | None = None) -> int:
    """``python -m qnprov.controls.dns mta-sts-policy [--mode enforce|testing] MX...``.

    Prints ``{"policy": TEXT, "id": ID}``; roles/mta_sts publishes exactly TEXT, so
    the ``_mta-sts`` TXT id that ``qnprov dns records`` prints matches what is served.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m qnprov.controls.dns")
    parser.add_argument("what", choices=["mta-sts-policy"])
    parser.add_argument("--mode", choices=["enforce", "testing"], default="enforce")
    parser.add_argument("--max-age", type=int, default=MTA_STS_MAX_AGE)
    parser.add_argument("mx", nargs="+")
    args = parser.parse_args(argv)
    try:
        mx_hosts = tuple(check_domain(mx) for mx in args.mx)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    policy = mta_sts_policy(mx_hosts, args.mode, args.max_age)
    sys.stdout.write(json.dumps({"policy": policy, "id": mta_sts_policy_id(policy)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
