"""DNS records an agency's own mail subdomain needs before it receives or sends mail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str
    why: str

    def zone_line(self) -> str:
        value = f'"{self.value}"' if self.type == "TXT" else self.value
        return f"{self.name}. 3600 IN {self.type} {value}"


def agency_domain_records(domain: str, *, mx_host: str, report_address: str, dkim_selector: str = "mail",
                          primary_domain: str, dkim_public_key: str | None = None) -> list[DnsRecord]:
    """MX, SPF, DKIM and DMARC for ``domain``, served by the province's mail host.

    DMARC is ``p=quarantine`` (the issue's floor); move to ``p=reject`` once the reports
    show only the province's own servers sending. Without a public key, DKIM is a CNAME
    to the primary domain's selector, so one key (rotated centrally) signs every domain.
    """
    records = [
        DnsRecord(domain, "MX", f"10 {mx_host}.", "mail for the agency goes to the province's mail host"),
        DnsRecord(domain, "TXT", "v=spf1 mx -all", "only the MX hosts may send as this domain"),
    ]
    if dkim_public_key:
        records.append(DnsRecord(f"{dkim_selector}._domainkey.{domain}", "TXT",
                                 f"v=DKIM1; k=rsa; p={dkim_public_key}", "verifies the DKIM signatures"))
    else:
        records.append(DnsRecord(f"{dkim_selector}._domainkey.{domain}", "CNAME",
                                 f"{dkim_selector}._domainkey.{primary_domain}.",
                                 "shares the primary domain's DKIM key"))
    records.append(DnsRecord(f"_dmarc.{domain}", "TXT",
                             f"v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s; rua=mailto:{report_address}",
                             "receivers quarantine mail that fails SPF and DKIM alignment"))
    return records
