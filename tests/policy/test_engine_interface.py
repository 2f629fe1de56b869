"""The engine's public interface, as the milter codes against it."""

from __future__ import annotations

from qnprov.policy.engine import Decision, Envelope, PolicyEngine

PLAIN = (
    b"From: A <a@quangninh.gov.vn>\r\nTo: b@quangninh.gov.vn\r\nSubject: Lich hop\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nXin ch\xc3\xa0o\r\n"
)


def test_packaged_bundle_loads_with_identity() -> None:
    engine = PolicyEngine.load()
    assert engine.version == "qn-email-2014.r1"
    assert engine.local_domains == frozenset({"quangninh.gov.vn"})


def test_clean_internal_mail_is_accepted_without_headers() -> None:
    engine = PolicyEngine.load()
    decision = engine.evaluate(PLAIN, Envelope("a@quangninh.gov.vn", ("b@quangninh.gov.vn",),
                                               authenticated_user="a@quangninh.gov.vn"))
    assert isinstance(decision, Decision)
    assert decision.verdict == "accept"
    assert decision.direction == "internal"
    assert decision.findings == ()
    assert decision.add_headers == ()
    assert decision.reply is None
    assert decision.to_json() == {"verdict": "accept", "findings": [], "policy_version": "qn-email-2014.r1"}


def test_marked_subject_is_rejected_with_bilingual_ascii_reply() -> None:
    engine = PolicyEngine.load()
    message = PLAIN.replace(b"Subject: Lich hop", b"Subject: =?utf-8?b?W03huqxUXSBCw6FvIGPDoW8=?=")
    decision = engine.evaluate(message, Envelope("a@quangninh.gov.vn", ("b@quangninh.gov.vn",),
                                                 authenticated_user="a@quangninh.gov.vn"))
    assert decision.verdict == "reject"
    assert decision.findings[0].clause == "1.3(1)"
    assert decision.findings[0].location == "subject"
    assert decision.reply is not None
    code, status, text = decision.reply
    assert (code, status) == ("550", "5.7.1")
    assert text.isascii()
    assert "1.3(1)" in text and "Thu bi tu choi theo khoan" in text and "Rejected under clause" in text
    assert len(text) <= 490 and "%" not in text and "\n" not in text
