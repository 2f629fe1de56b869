"""Verify signed documents (clause 1.2): S/MIME, detached .p7s and signed PDFs.

Verification uses ``openssl cms -verify`` in a subprocess with a timeout. Why openssl
rather than asn1crypto + cryptography in-process: CMS verification has many details
(signed-attribute re-encoding, canonical S/MIME text, RSA-PSS/ECDSA, chain building with
intermediates carried in the CMS) that OpenSSL implements and has had audited for
decades; re-implementing them here would be a new, untested crypto code path. Signed
mail is a small share of traffic, so the few milliseconds of a process start are cheap,
and the subprocess also isolates the parser of hostile DER from the milter's memory.

Outcome per object: ``valid`` (signature intact, chain to a configured anchor),
``untrusted`` (signature intact, chain does not reach an anchor), ``invalid`` (content or
signature altered, or malformed), ``unverifiable`` (the verifier itself failed or timed
out). The message itself is never changed.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from qnprov.policy.extract_types import SignedObject

Status = Literal["valid", "invalid", "untrusted", "unverifiable"]
# Bounded repetitions: a hostile file cannot make the search backtrack over long runs.
_BYTE_RANGE = re.compile(rb"/ByteRange\s{0,8}\[\s{0,8}" + rb"\s{1,8}".join([rb"(\d{1,12})"] * 4) + rb"\s{0,8}\]")


@dataclass(frozen=True)
class SignatureResult:
    location: str
    kind: str
    status: Status
    signer: str = ""
    ca: str = ""
    reason: str = ""

    def describe(self) -> str:
        """Human-readable summary for findings and the audit log (UTF-8 kept)."""
        text = f"{self.kind} signature {self.status}"
        for label, value in (("signer", self.signer), ("ca", self.ca), ("reason", self.reason)):
            if value:
                text += f"; {label}: {value}"
        return text

    def header_value(self) -> str:
        """One-line, 7-bit value: non-ASCII names use RFC 2231 ``name*=utf-8''...`` parameters."""
        parts: list[str] = [self.status]
        if self.signer:
            parts.append(_parameter("signer", self.signer))
        if self.ca:
            parts.append(_parameter("ca", self.ca))
        if self.reason:
            parts.append(f"reason={_token(self.reason)}")
        parts.append(_parameter("location", self.location))
        return "; ".join(parts)


def _parameter(name: str, value: str) -> str:
    value = " ".join(value.split())
    if value.isascii():
        return f'{name}="{_quote(value)}"'
    return f"{name}*=utf-8''{urllib.parse.quote(value, safe='')}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _token(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-")[:60] or "unknown"


def load_anchors(directory: Path | None) -> list[x509.Certificate]:
    """PEM or DER certificates from a directory (files that are not certificates are skipped)."""
    if directory is None or not directory.is_dir():
        return []
    anchors = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                anchors.extend(x509.load_pem_x509_certificates(data))
            else:
                anchors.append(x509.load_der_x509_certificate(data))
        except ValueError:
            continue
    return anchors


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if values:
        return str(values[0].value)
    return name.rfc4514_string()


class SignatureVerifier:
    def __init__(self, anchors: list[x509.Certificate], *, timeout: float = 5.0,
                 openssl: str = "openssl") -> None:
        self.anchors = anchors
        self.timeout = timeout
        self.openssl = openssl
        self._anchors_pem = b"".join(cert.public_bytes(Encoding.PEM) for cert in anchors)

    def verify(self, obj: SignedObject, *, timeout: float | None = None) -> SignatureResult:
        """Verify one object; ``timeout`` (seconds, per OpenSSL run) defaults to the verifier's."""
        run_timeout = self.timeout if timeout is None else min(self.timeout, timeout)
        if run_timeout <= 0:
            return SignatureResult(obj.location, obj.kind, "unverifiable", reason="inspection-time-exhausted")
        try:
            if obj.kind == "smime":
                return self._run(obj, obj.data, inform="SMIME", content=None, timeout=run_timeout)
            if obj.kind == "p7s":
                return self._run(obj, obj.data, inform=_der_or_pem(obj.data), content=obj.content,
                                 timeout=run_timeout)
            return self._verify_pdf(obj, run_timeout)
        except subprocess.TimeoutExpired:
            return SignatureResult(obj.location, obj.kind, "unverifiable", reason="verifier-timeout")
        except OSError as exc:
            return SignatureResult(obj.location, obj.kind, "unverifiable", reason=f"verifier-error-{exc.errno}")

    def _verify_pdf(self, obj: SignedObject, timeout: float) -> SignatureResult:
        data = obj.data
        matches = list(_BYTE_RANGE.finditer(data))
        if not matches:
            return SignatureResult(obj.location, "pdf", "invalid", reason="no-byte-range")
        # The last signature covers the most of the file; earlier ones are older revisions.
        a, b, c, d = (int(value) for value in matches[-1].groups())
        if not (a == 0 and 0 < b < c and c + d <= len(data) and b < len(data)):
            return SignatureResult(obj.location, "pdf", "invalid", reason="byte-range-out-of-file")
        gap = data[b:c].strip()
        if not (gap.startswith(b"<") and gap.endswith(b">")):
            return SignatureResult(obj.location, "pdf", "invalid", reason="contents-not-hex-string")
        try:
            cms = bytes.fromhex(gap[1:-1].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return SignatureResult(obj.location, "pdf", "invalid", reason="contents-not-hex-string")
        cms = _trim_der(cms)
        signed_content = data[a:a + b] + data[c:c + d]
        result = self._run(obj, cms, inform="DER", content=signed_content, timeout=timeout)
        if result.status == "valid" and c + d != len(data):
            # Bytes appended after the signed revision: the signature holds for that revision only.
            return SignatureResult(result.location, "pdf", "valid", result.signer, result.ca,
                                   reason="later-revision-unsigned")
        return result

    def _run(self, obj: SignedObject, data: bytes, *, inform: str, content: bytes | None,
             timeout: float) -> SignatureResult:
        if obj.kind == "p7s" and content is None and not _has_embedded_content(data, inform):
            return SignatureResult(obj.location, obj.kind, "invalid", reason="detached-content-missing")
        with tempfile.TemporaryDirectory(prefix="qnprov-sig-") as tmp:
            workdir = Path(tmp)
            source = workdir / "input"
            source.write_bytes(data)
            signer_file = workdir / "signer.pem"
            base = [self.openssl, "cms", "-verify", "-inform", inform, "-in", str(source),
                    "-out", "/dev/null", "-signer", str(signer_file), "-purpose", "any"]
            if inform != "SMIME":
                base.append("-binary")
            if content is not None:
                content_file = workdir / "content"
                content_file.write_bytes(content)
                base += ["-content", str(content_file)]
            if self._anchors_pem:
                anchors_file = workdir / "anchors.pem"
                anchors_file.write_bytes(self._anchors_pem)
                full = subprocess.run([*base, "-CAfile", str(anchors_file), "-no-CApath", "-no-CAstore"],
                                      capture_output=True, timeout=timeout, check=False)
                chain_reason = _chain_reason(full.stderr)
                if full.returncode == 0:
                    signer = _read_signer(signer_file)
                    return SignatureResult(obj.location, obj.kind, "valid",
                                           signer=_common_name(signer.subject) if signer else "",
                                           ca=self._anchor_for(signer))
            else:
                chain_reason = "no-trust-anchors-configured"
            integrity = subprocess.run([*base, "-noverify"], capture_output=True, timeout=timeout, check=False)
            signer = _read_signer(signer_file)
            signer_name = _common_name(signer.subject) if signer else ""
            if integrity.returncode == 0:
                reason = chain_reason
                return SignatureResult(obj.location, obj.kind, "untrusted", signer=signer_name,
                                       ca=_common_name(signer.issuer) if signer else "", reason=reason)
            return SignatureResult(obj.location, obj.kind, "invalid", signer=signer_name,
                                   reason=_failure_reason(integrity.stderr))

    def _anchor_for(self, signer: x509.Certificate | None) -> str:
        if signer is None:
            return ""
        issuer = signer.issuer
        for anchor in self.anchors:
            if anchor.subject == issuer:
                return _common_name(anchor.subject)
        # Signed via an intermediate carried in the CMS: report the issuer and first anchor.
        return _common_name(issuer)


def _read_signer(path: Path) -> x509.Certificate | None:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return certs[0] if certs else None


def _chain_reason(stderr: bytes) -> str:
    """Why OpenSSL refused the chain (the signature itself may still be intact)."""
    text = stderr.decode("utf-8", errors="replace").lower()
    if "expired" in text:
        return "certificate-expired"
    if "not yet valid" in text:
        return "certificate-not-yet-valid"
    if "revoked" in text:
        return "certificate-revoked"
    if "self-signed" in text or "self signed" in text:
        return "self-signed-not-trusted"
    return "chain-not-to-trust-anchor"


def _failure_reason(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").lower()
    if "digest" in text:
        return "content-digest-mismatch"
    if "signature failure" in text or "verification failure" in text:
        return "signature-mismatch"
    if "no content" in text:
        return "detached-content-missing"
    if "asn1" in text or "decode" in text or "smime" in text or "pem" in text:
        return "malformed-signature"
    return "verification-failed"


def _der_or_pem(data: bytes) -> str:
    return "PEM" if data.lstrip().startswith(b"-----BEGIN") else "DER"


def _trim_der(data: bytes) -> bytes:
    """PDF /Contents is zero-padded; cut it to the DER length of the outer SEQUENCE."""
    if len(data) < 4 or data[0] != 0x30:
        return data
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return data
    length = int.from_bytes(data[2:2 + count], "big")
    return data[: 2 + count + length]


def _has_embedded_content(data: bytes, inform: str) -> bool:
    """Whether a CMS blob carries its content (attached) rather than pointing at a detached one."""
    if inform != "DER":
        return True  # let openssl decide for PEM/SMIME
    try:
        from asn1crypto import cms

        info = cms.ContentInfo.load(data)
        content = info["content"]["encap_content_info"]["content"]
        return content.native is not None
    except Exception:  # malformed: openssl will report it precisely
        return True
