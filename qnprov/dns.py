"""The DNS records a mail domain publishes: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, TLSA, and the
records mail clients configure themselves from (autoconfig/autodiscover CNAMEs, RFC 6186 SRV).

The one place qnprov writes a DNS record. Everything here is pure: it turns names,
keys and digests into :class:`DnsRecord` values and zone-file text. Two callers use it:

* ``qnprov dns records`` (:mod:`qnprov.controls.cli`): every record a hosted domain
  publishes, through :func:`build_records`; the DKIM key and the host certificate are
  read from the host by :func:`qnprov.controls.dns.read_host_material`;
* ``qnprov agency add --domain`` (:mod:`qnprov.directory.cli`): the records an agency's
  own mail subdomain needs, through :func:`agency_domain_records`.

Each record value (the SPF string, the DMARC tags, ...) is written once, in the
``*_record`` functions below, and both callers are built from them.
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

from qnprov.errors import InputError

DEFAULT_TTL = 3600
MTA_STS_MAX_AGE = 604800  # one week, as RFC 8461 suggests for enforce mode
SPF_POLICY = "v=spf1 mx -all"  # only the domain's MX hosts send as it
DmarcPolicy = Literal["quarantine", "reject"]
MtaStsMode = Literal["enforce", "testing"]
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SELECTOR = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$", re.IGNORECASE)


@dataclass(frozen=True)
class DnsRecord:
    """One resource record. ``name`` is absolute, with the trailing dot."""

    name: str
    type: str
    value: str
    ttl: int = DEFAULT_TTL
    purpose: str = ""

    def zone_value(self) -> str:
        """The RDATA as a zone file writes it: TXT quoted, in strings of at most 255 octets."""
        if self.type != "TXT":
            return self.value
        strings = " ".join(f'"{chunk}"' for chunk in txt_chunks(self.value))
        return f"( {strings} )" if len(self.value) > 255 else strings

    def zone_line(self) -> str:
        """The record on one line, ``NAME TTL IN TYPE VALUE``."""
        return f"{self.name} {self.ttl} IN {self.type} {self.zone_value()}"


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


# --- one function per record kind: each record value is written here and only here ---------


def mx_records(apex: str, mx_hosts: tuple[str, ...], purpose: str = "mail exchanger") -> list[DnsRecord]:
    """MX preferences 10, 20, ... in the order given."""
    return [DnsRecord(apex, "MX", f"{10 * (i + 1)} {mx}.", purpose=purpose) for i, mx in enumerate(mx_hosts)]


def spf_record(apex: str, purpose: str = "SPF: only our MX hosts send") -> DnsRecord:
    return DnsRecord(apex, "TXT", SPF_POLICY, purpose=purpose)


def dkim_record_name(domain: str, selector: str) -> str:
    """The absolute name of a selector's key record (``domain`` with or without its trailing dot)."""
    return f"{selector}._domainkey.{domain.rstrip('.')}."


def dkim_txt_file(selector: str, public: str) -> bytes:
    """``<domain>.<selector>.txt`` in the shape ``rspamadm dkim_keygen`` writes (:func:`parse_dkim_txt` reads it)."""
    return f'{selector}._domainkey IN TXT ( "v=DKIM1; k=rsa; "\n\t"p={public}" ) ;\n'.encode("ascii")


def dkim_key_record(apex: str, key: DkimKey, purpose: str = "DKIM public key (from the deployed key)") -> DnsRecord:
    return DnsRecord(f"{key.selector}._domainkey.{apex}", "TXT",
                     f"v=DKIM1; k={key.key_type}; p={key.public_key_b64}", purpose=purpose)


def dkim_alias_record(apex: str, selector: str, key_apex: str, purpose: str) -> DnsRecord:
    """A CNAME to another domain's selector, so one (centrally rotated) key signs both."""
    return DnsRecord(f"{selector}._domainkey.{apex}", "CNAME", f"{selector}._domainkey.{key_apex}", purpose=purpose)


def dmarc_record(apex: str, policy: DmarcPolicy, report_mailbox: str, *, subdomain_policy: DmarcPolicy | None = None,
                 purpose: str = "DMARC policy and aggregate reports") -> DnsRecord:
    """Strict alignment (``adkim=s; aspf=s``); the province allows quarantine or reject only."""
    if policy not in ("quarantine", "reject") or subdomain_policy not in (None, "quarantine", "reject"):
        raise InputError(f"DMARC policy {policy!r}: the province requires quarantine or reject")
    sp = f" sp={subdomain_policy};" if subdomain_policy else ""
    return DnsRecord(f"_dmarc.{apex}", "TXT", f"v=DMARC1; p={policy};{sp} adkim=s; aspf=s; rua=mailto:{report_mailbox}",
                     purpose=purpose)


def mta_sts_record(apex: str, policy: str) -> DnsRecord:
    return DnsRecord(f"_mta-sts.{apex}", "TXT", f"v=STSv1; id={mta_sts_policy_id(policy)}",
                     purpose=f"MTA-STS (policy at https://mta-sts.{apex.rstrip('.')}/.well-known/mta-sts.txt)")


def tls_rpt_record(apex: str, report_mailbox: str) -> DnsRecord:
    return DnsRecord(f"_smtp._tls.{apex}", "TXT", f"v=TLSRPTv1; rua=mailto:{report_mailbox}", purpose="TLS-RPT reports")


def client_alias_records(apex: str, client_host: str) -> list[DnsRecord]:
    """``autoconfig`` (Thunderbird) and ``autodiscover`` (Outlook) point at the host that serves
    both over HTTPS (roles/webmail); its certificate must name these two names too."""
    return [
        DnsRecord(f"autoconfig.{apex}", "CNAME", f"{client_host}.",
                  purpose="Thunderbird autoconfig (https://autoconfig.<domain>/mail/config-v1.1.xml)"),
        DnsRecord(f"autodiscover.{apex}", "CNAME", f"{client_host}.",
                  purpose="Outlook Autodiscover (POST https://autodiscover.<domain>/autodiscover/autodiscover.xml)"),
    ]


# RFC 6186 service labels (and RFC 8314's _submissions): the port each one offers, or None for a
# service this system does not offer. RFC 2782: a target of "." means the service is decidedly
# not available at this domain. Plain IMAP (143, STARTTLS) and POP3 are not announced: clients
# are sent to implicit TLS on 993 (RFC 8314 section 5.1 prefers it).
CLIENT_SRV_SERVICES: tuple[tuple[str, int | None], ...] = (
    ("_submission._tcp", 587),
    ("_submissions._tcp", 465),
    ("_imaps._tcp", 993),
    ("_imap._tcp", None),
    ("_pop3s._tcp", None),
    ("_pop3._tcp", None),
)


def client_srv_records(apex: str, client_host: str) -> list[DnsRecord]:
    """RFC 6186 SRV records: ``0 1 PORT host.`` for an offered service, ``0 0 0 .`` for one not offered."""
    records = []
    for label, port in CLIENT_SRV_SERVICES:
        if port is None:
            records.append(DnsRecord(f"{label}.{apex}", "SRV", "0 0 0 .",
                                     purpose=f"RFC 6186: {label.split('.')[0][1:]} is not offered"))
        else:
            records.append(DnsRecord(f"{label}.{apex}", "SRV", f"0 1 {port} {client_host}.",
                                     purpose=f"RFC 6186: {label.split('.')[0][1:]} on port {port}"))
    return records


def tlsa_record(mx_host: str, spki_sha256_hex: str) -> DnsRecord:
    return DnsRecord(f"_25._tcp.{mx_host}.", "TLSA", f"3 1 1 {spki_sha256_hex}",
                     purpose="DANE-EE: SPKI SHA-256 of the host key (needs DNSSEC)")


# --- the two record sets ----------------------------------------------------------------------


def build_records(mail: DomainMail) -> list[DnsRecord]:
    """Every record a hosted domain must publish, in zone order (``qnprov dns records``)."""
    domain = check_domain(mail.domain)
    if not mail.mx_hosts:
        raise InputError(f"{domain}: at least one MX host is needed")
    apex = f"{domain}."
    records = mx_records(apex, mail.mx_hosts)
    records.append(spf_record(apex))
    if mail.dkim is not None:
        records.append(dkim_key_record(apex, mail.dkim))
    records.append(dmarc_record(apex, mail.dmarc_policy, mail.report_mailbox))
    records.append(mta_sts_record(apex, mta_sts_policy(mail.mx_hosts, mail.mta_sts_mode)))
    records.append(tls_rpt_record(apex, mail.report_mailbox))
    records += [tlsa_record(mx, mail.tlsa_sha256[mx]) for mx in mail.mx_hosts if mail.tlsa_sha256.get(mx)]
    # Mail clients are sent to the first MX host, the official name the webmail serves.
    client_host = check_domain(mail.mx_hosts[0])
    records += client_alias_records(apex, client_host)
    records += client_srv_records(apex, client_host)
    return records


def agency_domain_records(domain: str, *, mx_host: str, report_address: str, dkim_selector: str = "mail",
                          primary_domain: str, dkim_public_key: str | None = None) -> list[DnsRecord]:
    """MX, SPF, DKIM and DMARC for an agency's mail subdomain, served by the province's mail host.

    DMARC is ``p=quarantine`` (the issue's floor); move to ``p=reject`` once the reports
    show only the province's own servers sending. Without a public key, DKIM is a CNAME
    to the primary domain's selector, so one key (rotated centrally) signs every domain.
    """
    apex = f"{domain}."
    records = mx_records(apex, (mx_host,), purpose="mail for the agency goes to the province's mail host")
    records.append(spf_record(apex, purpose="only the MX hosts may send as this domain"))
    if dkim_public_key:
        records.append(dkim_key_record(apex, DkimKey(dkim_selector, dkim_public_key),
                                       purpose="verifies the DKIM signatures"))
    else:
        records.append(dkim_alias_record(apex, dkim_selector, f"{primary_domain}.",
                                         purpose="shares the primary domain's DKIM key"))
    records.append(dmarc_record(apex, "quarantine", report_address, subdomain_policy="quarantine",
                                purpose="receivers quarantine mail that fails SPF and DKIM alignment"))
    return records


# --- output -----------------------------------------------------------------------------------


def render_zone(records: list[DnsRecord]) -> str:
    """Zone-file text, each record under a comment saying what it is for."""
    lines = []
    for record in records:
        if record.purpose:
            lines.append(f"; {record.purpose}")
        lines.append(f"{record.name}\t{record.ttl}\tIN\t{record.type}\t{record.zone_value()}")
    return "\n".join(lines) + "\n"


def records_json(per_domain: dict[str, tuple[list[DnsRecord], str]]) -> str:
    doc: dict[str, Any] = {
        domain: {"records": [asdict(r) for r in records], "mta_sts_policy": policy}
        for domain, (records, policy) in per_domain.items()
    }
    return json.dumps(doc, indent=2)
