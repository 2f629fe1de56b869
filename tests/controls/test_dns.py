"""DNS record building as data: real keys and certificates generated here, no network."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from qnprov import dns
from qnprov.errors import InputError


@pytest.fixture(scope="module")
def dkim_txt() -> tuple[str, str]:
    """A DKIM TXT file in the shape ``rspamadm dkim_keygen`` writes, and its p= value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    p = base64.b64encode(public).decode()
    value = f"p={p}"
    chunks = "\n".join(f'\t"{value[i:i + 250]}"' for i in range(0, len(value), 250))
    return f'mail2026._domainkey IN TXT ( "v=DKIM1; k=rsa; "\n{chunks}\n) ;\n', p


@pytest.fixture(scope="module")
def cert_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail1.quangninh.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_dkim_txt_file_is_read(dkim_txt: tuple[str, str]) -> None:
    text, p = dkim_txt
    key = dns.parse_dkim_txt(text)
    assert key.selector == "mail2026" and key.public_key_b64 == p and key.key_type == "rsa"


def test_dkim_pem_needs_selector() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    assert dns.parse_dkim_txt(pem, selector_hint="s1").public_key_b64 == "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
    with pytest.raises(InputError, match="selector"):
        dns.parse_dkim_txt(pem)
    with pytest.raises(InputError, match="p="):
        dns.parse_dkim_txt('s._domainkey IN TXT ( "v=DKIM1; k=rsa; " ) ;')


def test_tlsa_matches_openssl(cert_pem: bytes) -> None:
    spki = subprocess.run(["openssl", "x509", "-noout", "-pubkey"], input=cert_pem, capture_output=True, check=True)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=spki.stdout,
                         capture_output=True, check=True).stdout
    assert dns.spki_sha256(cert_pem) == hashlib.sha256(der).hexdigest()


def test_records_as_data(dkim_txt: tuple[str, str], cert_pem: bytes) -> None:
    text, p = dkim_txt
    mail = dns.DomainMail(domain="QuangNinh.test.", mx_hosts=("mail1.quangninh.test",),
                          dkim=dns.parse_dkim_txt(text),
                          tlsa_sha256={"mail1.quangninh.test": dns.spki_sha256(cert_pem)},
                          report_mailbox="postmaster@quangninh.test")
    records = {(r.name, r.type): r.value for r in dns.build_records(mail)}
    assert records[("quangninh.test.", "MX")] == "10 mail1.quangninh.test."
    assert records[("quangninh.test.", "TXT")] == "v=spf1 mx -all"
    assert records[("mail2026._domainkey.quangninh.test.", "TXT")] == f"v=DKIM1; k=rsa; p={p}"
    assert records[("_dmarc.quangninh.test.", "TXT")].startswith("v=DMARC1; p=quarantine;")
    assert "rua=mailto:postmaster@quangninh.test" in records[("_dmarc.quangninh.test.", "TXT")]
    assert records[("_mta-sts.quangninh.test.", "TXT")].startswith("v=STSv1; id=")
    assert records[("_smtp._tls.quangninh.test.", "TXT")] == "v=TLSRPTv1; rua=mailto:postmaster@quangninh.test"
    assert records[("_25._tcp.mail1.quangninh.test.", "TLSA")] == f"3 1 1 {dns.spki_sha256(cert_pem)}"
    # MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, TLSA, 2 client CNAMEs, 6 RFC 6186 SRV
    assert len(records) == 15


def test_client_autoconfiguration_records() -> None:
    """autoconfig/autodiscover CNAMEs to the official name; RFC 6186 SRV, "." for what is not offered."""
    mail = dns.DomainMail(domain="quangninh.test", mx_hosts=("Mail1.QuangNinh.test", "mail2.quangninh.test"),
                          dkim=None, tlsa_sha256={}, report_mailbox="postmaster@quangninh.test")
    records = dns.build_records(mail)
    cnames = {r.name: r.value for r in records if r.type == "CNAME"}
    assert cnames == {"autoconfig.quangninh.test.": "mail1.quangninh.test.",
                      "autodiscover.quangninh.test.": "mail1.quangninh.test."}
    srv = {r.name: r.value for r in records if r.type == "SRV"}
    assert srv == {
        "_submission._tcp.quangninh.test.": "0 1 587 mail1.quangninh.test.",
        "_submissions._tcp.quangninh.test.": "0 1 465 mail1.quangninh.test.",
        "_imaps._tcp.quangninh.test.": "0 1 993 mail1.quangninh.test.",
        "_imap._tcp.quangninh.test.": "0 0 0 .",
        "_pop3s._tcp.quangninh.test.": "0 0 0 .",
        "_pop3._tcp.quangninh.test.": "0 0 0 .",
    }
    zone = dns.render_zone(records)
    assert "_imap._tcp.quangninh.test.\t3600\tIN\tSRV\t0 0 0 .\n" in zone
    assert "autoconfig.quangninh.test.\t3600\tIN\tCNAME\tmail1.quangninh.test.\n" in zone
    # Every SRV value is priority weight port target, as RFC 2782 writes it.
    for value in srv.values():
        priority, weight, port, target = value.split()
        assert priority == "0" and int(weight) in (0, 1) and 0 <= int(port) < 65536 and target.endswith(".")


def test_mta_sts_policy_and_id_change_together() -> None:
    enforce = dns.mta_sts_policy(("mx1.quangninh.gov.vn", "mx2.quangninh.gov.vn"), "enforce")
    assert enforce == ("version: STSv1\r\nmode: enforce\r\nmx: mx1.quangninh.gov.vn\r\nmx: mx2.quangninh.gov.vn\r\n"
                       "max_age: 604800\r\n")
    base = dns.DomainMail("quangninh.gov.vn", ("mx1.quangninh.gov.vn",), None, {}, "postmaster@quangninh.gov.vn")
    testing = dns.DomainMail("quangninh.gov.vn", ("mx1.quangninh.gov.vn",), None, {}, "postmaster@quangninh.gov.vn",
                             mta_sts_mode="testing")

    def sts_id(mail: dns.DomainMail) -> str:
        return next(r.value for r in dns.build_records(mail) if r.name.startswith("_mta-sts"))

    assert sts_id(base) != sts_id(testing)
    assert sts_id(base) == sts_id(base)


def test_weak_dmarc_and_bad_domains_are_refused() -> None:
    weak = dns.DomainMail("quangninh.test", ("mail1.quangninh.test",), None, {}, "x@quangninh.test",
                          dmarc_policy="none")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="quarantine or reject"):
        dns.build_records(weak)
    with pytest.raises(InputError, match="not a domain"):
        dns.check_domain("quangninh.test; rm -rf /")
    with pytest.raises(InputError, match="MX"):
        dns.build_records(dns.DomainMail("quangninh.test", (), None, {}, "x@quangninh.test"))


def test_zone_text_splits_long_txt(dkim_txt: tuple[str, str]) -> None:
    text, p = dkim_txt
    mail = dns.DomainMail("quangninh.test", ("mail1.quangninh.test",), dns.parse_dkim_txt(text), {},
                          "postmaster@quangninh.test")
    zone = dns.render_zone(dns.build_records(mail))
    dkim_line = next(line for line in zone.splitlines() if line.startswith("mail2026._domainkey"))
    strings = dkim_line.split("TXT\t", 1)[1].strip("( )").split('" "')
    assert all(len(s.strip('"')) <= 255 for s in strings)
    assert "".join(s.strip('"') for s in strings) == f"v=DKIM1; k=rsa; p={p}"
    assert "quangninh.test.\t3600\tIN\tTXT\t\"v=spf1 mx -all\"" in zone


def test_real_rspamadm_dkim_txt() -> None:
    """The TXT file ``rspamadm dkim_keygen`` wrote in a lab container (public half only)."""
    from pathlib import Path

    text = (Path(__file__).parent / "data" / "rspamadm-dkim.txt").read_text()
    key = dns.parse_dkim_txt(text)
    assert key.selector == "qn2026" and key.key_type == "rsa"
    der = base64.b64decode(key.public_key_b64)
    public = serialization.load_der_public_key(der)
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048



# The tag each kind of record starts with, and the owner-name labels qnprov gives them.
RECORD_MARKERS = ("v=spf1", "v=DMARC1", "v=DKIM1", "v=STSv1", "v=TLSRPTv1", "._domainkey.", "_25._tcp.",
                  "_dmarc.", "_smtp._tls.")


def test_one_dns_record_builder_in_the_package() -> None:
    """``DnsRecord`` is defined once, and every record string is written in ``qnprov/dns.py`` only."""
    import ast
    from pathlib import Path

    import qnprov

    package = Path(qnprov.__file__).parent
    classes: list[str] = []
    writers: dict[str, set[str]] = {marker: set() for marker in RECORD_MARKERS}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "DnsRecord":
                classes.append(relative)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for marker in RECORD_MARKERS:
                    if marker in node.value:
                        writers[marker].add(relative)
    assert classes == ["qnprov/dns.py"]
    assert writers == {marker: {"qnprov/dns.py"} for marker in RECORD_MARKERS}
    assert dns.SPF_POLICY == "v=spf1 mx -all"


def test_mta_sts_policy_command_serves_what_dns_announces() -> None:
    """The command the mta_sts role runs prints the policy text and the id ``qnprov dns records`` publishes."""
    import json
    import sys

    proc = subprocess.run([sys.executable, "-m", "qnprov", "dns", "mta-sts-policy", "--mode", "testing",
                           "mx1.quangninh.test", "MX2.quangninh.test."], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["policy"] == ("version: STSv1\r\nmode: testing\r\nmx: mx1.quangninh.test\r\n"
                                 "mx: mx2.quangninh.test\r\nmax_age: 604800\r\n")
    mail = dns.DomainMail("quangninh.test", ("mx1.quangninh.test", "mx2.quangninh.test"), None, {},
                          "postmaster@quangninh.test", mta_sts_mode="testing")
    announced = next(r.value for r in dns.build_records(mail) if r.name == "_mta-sts.quangninh.test.")
    assert announced == f"v=STSv1; id={printed['id']}"
    bad = subprocess.run([sys.executable, "-m", "qnprov", "dns", "mta-sts-policy", "not a host"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "is not a domain name" in bad.stderr and bad.stdout == ""
