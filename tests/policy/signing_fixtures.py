"""A test CA standing in for the Government Cipher Committee, and signed fixtures made with it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str, org: str = "Ban Cơ yếu Chính phủ (TEST)") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(common_name: str = "TEST RootCA chuyên dùng Chính phủ G2") -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Identity(cert, key)


def make_signer(ca: Identity, common_name: str = "Sở Nội vụ tỉnh Quảng Ninh", *, expired: bool = False) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - (dt.timedelta(days=400) if expired else dt.timedelta())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, "UBND tỉnh Quảng Ninh"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Identity(cert, key)


def write_anchor(ca: Identity, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "test-root.pem"
    path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    return path


def smime_signed(signer: Identity, body: str = "Kính gửi: các sở, ban, ngành.\r\nNội dung công văn.\r\n") -> bytes:
    """A complete multipart/signed message (headers added around cryptography's S/MIME output)."""
    inner = ("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(inner)
        .add_signer(signer.cert, signer.key, hashes.SHA256())
        .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])
    )
    headers = (b"From: vanthu@quangninh.gov.vn\r\nTo: chuyenvien@quangninh.gov.vn\r\n"
               b"Subject: Cong van ky so\r\nMessage-ID: <signed@quangninh.gov.vn>\r\n")
    return headers + signed.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")


def detached_p7s(signer: Identity, content: bytes) -> bytes:
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(signer.cert, signer.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    )


def signed_pdf(signer: Identity, visible_text: str = "QUYẾT ĐỊNH") -> bytes:
    """A PDF with an incremental-update signature field: /ByteRange plus a CMS /Contents.

    Built the way PAdES signers do it: reserve a zero-filled hex /Contents, compute the
    byte range around it, sign those bytes (detached CMS), then write the hex in place.
    """
    import pymupdf

    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), visible_text, fontsize=14, fontname="dejavu",
                     fontfile="/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    base = bytes(document.tobytes())
    document.close()
    reserved = 8192
    placeholder_range = b"/ByteRange [0 0000000000 0000000000 0000000000]"
    sig_object = (
        b"\n99 0 obj\n<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /ETSI.CAdES.detached "
        + placeholder_range + b" /Contents <" + b"0" * reserved + b"> >>\nendobj\n"
    )
    pdf = bytearray(base + sig_object + b"%%EOF\n")
    contents_start = pdf.index(b"/Contents <", len(base)) + len(b"/Contents ")
    contents_end = contents_start + reserved + 2
    byte_range = (0, contents_start, contents_end, len(pdf) - contents_end)
    rendered = b"/ByteRange [%d %010d %010d %010d]" % byte_range
    assert len(rendered) == len(placeholder_range)
    range_at = pdf.index(placeholder_range, len(base))
    pdf[range_at:range_at + len(rendered)] = rendered
    signed_bytes = bytes(pdf[:contents_start]) + bytes(pdf[contents_end:])
    cms = detached_p7s(signer, signed_bytes)
    hex_cms = cms.hex().encode().ljust(reserved, b"0")
    pdf[contents_start + 1:contents_end - 1] = hex_cms
    return bytes(pdf)


def opaque_signed(signer: Identity, inner_mime: bytes) -> bytes:
    """application/pkcs7-mime; smime-type=signed-data: the content travels inside the CMS."""
    import base64

    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(inner_mime)
        .add_signer(signer.cert, signer.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    body = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return (b"From: vanthu@quangninh.gov.vn\r\nTo: chuyenvien@quangninh.gov.vn\r\nSubject: opaque\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n" + body)
