"""Clause 1.2: signed documents are recognised, verified against configured anchors, never modified."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from policy_corpus import docx, message
from signing_fixtures import Identity, detached_p7s, make_ca, make_signer, signed_pdf, smime_signed, write_anchor

from qnprov.policy.engine import Decision, Envelope, PolicyEngine

ENVELOPE = Envelope("vanthu@quangninh.gov.vn", ("chuyenvien@quangninh.gov.vn",),
                    authenticated_user="vanthu@quangninh.gov.vn")


@pytest.fixture(scope="module")
def test_ca() -> Identity:
    return make_ca()


@pytest.fixture(scope="module")
def signer(test_ca: Identity) -> Identity:
    return make_signer(test_ca)


@pytest.fixture(scope="module")
def stranger() -> Identity:
    return make_signer(make_ca("Self-made CA"), "Mallory")


@pytest.fixture(scope="module")
def engine(test_ca: Identity, tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    anchors = tmp_path_factory.mktemp("anchors")
    write_anchor(test_ca, anchors)
    overrides = tmp_path_factory.mktemp("site") / "overrides.yml"
    overrides.write_text(f"qnprov_policy_overrides:\n  trust_anchors_dir: {anchors}\n", encoding="utf-8")
    return PolicyEngine.load(overrides_path=overrides)


def signature_headers(decision: Decision) -> list[str]:
    return [value for name, value in decision.add_headers if name == "X-QN-Signature"]


def test_valid_smime_is_accepted_with_signer_and_ca(engine: PolicyEngine, signer: Identity) -> None:
    raw = smime_signed(signer)
    decision = engine.evaluate(raw, ENVELOPE)
    assert decision.verdict == "accept"
    [header] = signature_headers(decision)
    assert header.startswith("valid; ")
    assert header.isascii() and "\n" not in header
    assert "signer*=utf-8''" + urllib.parse.quote("Sở Nội vụ tỉnh Quảng Ninh", safe="") in header
    assert "ca*=utf-8''" + urllib.parse.quote("TEST RootCA chuyên dùng Chính phủ G2", safe="") in header
    [finding] = decision.findings
    assert (finding.rule, finding.clause, finding.action) == ("signed-document", "1.2", "log")
    assert "Sở Nội vụ tỉnh Quảng Ninh" in finding.evidence


def test_tampered_smime_is_invalid(engine: PolicyEngine, signer: Identity) -> None:
    raw = smime_signed(signer).replace("Nội dung".encode(), b"Noi dung")
    decision = engine.evaluate(raw, ENVELOPE)
    assert decision.verdict == "tag"
    [header] = signature_headers(decision)
    assert header.startswith("invalid; ")
    assert "reason=" in header
    assert "signed-document-invalid" in {f.rule for f in decision.findings}


def test_smime_from_unknown_ca_is_untrusted(engine: PolicyEngine, stranger: Identity) -> None:
    decision = engine.evaluate(smime_signed(stranger), ENVELOPE)
    [header] = signature_headers(decision)
    assert header.startswith('untrusted; signer="Mallory"; ca="Self-made CA"; reason=chain-not-to-trust-anchor')
    assert decision.verdict == "tag"


def test_signed_pdf_valid_tampered_untrusted(engine: PolicyEngine, signer: Identity, stranger: Identity) -> None:
    good = signed_pdf(signer)
    decision = engine.evaluate(message(attachments=[("qd.pdf", "application/pdf", good)]), ENVELOPE)
    assert signature_headers(decision)[0].startswith("valid; ")
    assert decision.verdict == "accept"

    # Change one signed byte of the first revision (a digit inside the first object).
    at = good.index(b" 0 obj") - 1
    tampered = good[:at] + (b"7" if good[at:at + 1] != b"7" else b"8") + good[at + 1:]
    decision = engine.evaluate(message(attachments=[("qd.pdf", "application/pdf", tampered)]), ENVELOPE)
    assert signature_headers(decision)[0].startswith("invalid; ")

    decision = engine.evaluate(message(attachments=[("qd.pdf", "application/pdf", signed_pdf(stranger))]),
                               ENVELOPE)
    assert signature_headers(decision)[0].startswith("untrusted; ")


def test_detached_p7s_pairs_with_its_document(engine: PolicyEngine, signer: Identity) -> None:
    document = docx(body="Công văn số 15/UBND-VX")
    signature = detached_p7s(signer, document)
    good = message(attachments=[("cv.docx", "application/octet-stream", document),
                                ("cv.docx.p7s", "application/pkcs7-signature", signature)])
    assert signature_headers(engine.evaluate(good, ENVELOPE))[0].startswith("valid; ")

    swapped = message(attachments=[("cv.docx", "application/octet-stream", docx(body="Khác")),
                                   ("cv.docx.p7s", "application/pkcs7-signature", signature)])
    assert signature_headers(engine.evaluate(swapped, ENVELOPE))[0].startswith("invalid; ")

    orphan = message(attachments=[("cv.docx.p7s", "application/pkcs7-signature", signature)])
    header = signature_headers(engine.evaluate(orphan, ENVELOPE))[0]
    assert header.startswith("invalid; reason=detached-content-missing")


def test_no_anchors_means_untrusted_not_valid(signer: Identity, tmp_path: Path) -> None:
    overrides = tmp_path / "o.yml"
    overrides.write_text(f"trust_anchors_dir: {tmp_path / 'empty'}\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    header = signature_headers(engine.evaluate(smime_signed(signer), ENVELOPE))[0]
    assert header.startswith("untrusted; ") and "no-trust-anchors-configured" in header


def test_signed_message_bytes_are_untouched_and_rejects_carry_no_headers(engine: PolicyEngine,
                                                                         signer: Identity) -> None:
    raw = smime_signed(signer, body="TỐI MẬT\r\nNội dung\r\n")
    copy = bytes(raw)
    decision = engine.evaluate(raw, ENVELOPE)
    assert raw == copy
    # Marked content inside signed mail is still refused; nothing is added to a rejected message.
    assert decision.verdict == "reject"
    assert decision.add_headers == ()


def test_malformed_signature_is_invalid_not_a_crash(engine: PolicyEngine) -> None:
    raw = message(attachments=[("x.p7s", "application/pkcs7-signature", b"\x30\x82\x01\x00garbage")])
    decision = engine.evaluate(raw, ENVELOPE)
    assert signature_headers(decision)[0].startswith("invalid; ")
    assert not any(f.rule == "engine-failure" for f in decision.findings)


def test_expired_signer_is_untrusted_with_reason(engine: PolicyEngine, test_ca: Identity) -> None:
    old = make_signer(test_ca, "Cán bộ đã nghỉ hưu", expired=True)
    header = signature_headers(engine.evaluate(smime_signed(old), ENVELOPE))[0]
    assert header.startswith("untrusted; ") and "reason=certificate-expired" in header


def test_signature_count_per_message_is_capped(engine: PolicyEngine, signer: Identity) -> None:
    document = docx(body="x")
    signature = detached_p7s(signer, document)
    attachments = [("cv.docx", "application/octet-stream", document)]
    attachments += [(f"cv{index}.p7s", "application/pkcs7-signature", signature) for index in range(12)]
    decision = engine.evaluate(message(attachments=attachments), ENVELOPE)
    headers = signature_headers(decision)
    assert len(headers) == 12
    assert sum("too-many-signatures" in header for header in headers) == 2


def test_forged_signature_header_from_outside_is_flagged(engine: PolicyEngine) -> None:
    raw = message(sender="attacker@example.org",
                  extra_headers={"X-QN-Signature": 'valid; signer="Chủ tịch UBND"; ca="RootCA"'})
    decision = engine.evaluate(raw, Envelope("attacker@example.org", ("vanthu@quangninh.gov.vn",)))
    assert decision.verdict == "tag"
    [finding] = decision.findings
    assert (finding.rule, finding.clause, finding.location) == ("forged-policy-header", "1.2",
                                                                 "header:x-qn-signature")
    assert "Chủ tịch UBND" in finding.evidence


def test_opaque_signed_smime_is_verified_and_its_content_inspected(engine: PolicyEngine, signer: Identity) -> None:
    from signing_fixtures import opaque_signed

    clean = b"Content-Type: text/plain; charset=utf-8\r\n\r\nN\xe1\xbb\x99i dung\r\n"
    decision = engine.evaluate(opaque_signed(signer, clean), ENVELOPE)
    assert decision.verdict == "accept", decision.findings
    assert signature_headers(decision)[0].startswith("valid; ")

    marked = "Content-Type: text/plain; charset=utf-8\r\n\r\nTỐI MẬT\r\n".encode()
    decision = engine.evaluate(opaque_signed(signer, marked), ENVELOPE)
    assert decision.verdict == "reject"
    assert [f.location for f in decision.findings if f.rule == "classified-marking"] == [
        "attachment:smime.p7m/body"]


def test_encrypted_smime_is_held_as_uninspectable(engine: PolicyEngine) -> None:
    raw = (b"From: a@gmail.com\r\nTo: vanthu@quangninh.gov.vn\r\nSubject: enc\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nMIIBAAYJKoZIhvcNAQcDoIIB8TCCAe0CAQA=\r\n")
    decision = engine.evaluate(raw, Envelope("a@gmail.com", ("vanthu@quangninh.gov.vn",)))
    assert decision.verdict == "quarantine"
    assert [f.evidence for f in decision.findings] == [
        "cannot be inspected: S/MIME enveloped-data is encrypted"]
