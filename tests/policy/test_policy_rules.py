"""Clauses 1.1, 1.3(2), 1.3(3): envelope and header rules, with look-alike negatives."""

from __future__ import annotations

import pytest
from policy_corpus import message

from qnprov.policy.domains import FREEMAIL_DOMAINS, is_freemail, match_domain
from qnprov.policy.engine import Envelope, PolicyEngine, derive_direction

ENGINE = PolicyEngine.load()
OFFICIAL = "chuyenvien@quangninh.gov.vn"
COLLEAGUE = "vanthu@quangninh.gov.vn"


def rules_of(raw: bytes, envelope: Envelope) -> dict[str, str]:
    return {f.rule: f.evidence for f in ENGINE.evaluate(raw, envelope).findings}


# -- direction -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mail_from", "rcpts", "auth", "expected"), [
    (OFFICIAL, (COLLEAGUE,), OFFICIAL, "internal"),
    (OFFICIAL, (COLLEAGUE, "x@gmail.com"), OFFICIAL, "outbound"),
    ("citizen@gmail.com", (COLLEAGUE,), None, "inbound"),
    ("", (COLLEAGUE,), None, "inbound"),  # bounces
    ("Chuyenvien@QuangNinh.gov.vn.", (COLLEAGUE,), None, "internal"),
])
def test_direction_is_derived_from_local_domains(mail_from: str, rcpts: tuple[str, ...], auth: str | None,
                                                 expected: str) -> None:
    envelope = Envelope(mail_from, rcpts, authenticated_user=auth)
    assert derive_direction(envelope, ENGINE.local_domains) == expected


def test_explicit_direction_wins() -> None:
    envelope = Envelope(OFFICIAL, (COLLEAGUE,), direction="inbound")
    assert ENGINE.evaluate(message(), envelope).direction == "inbound"


# -- 1.1 -----------------------------------------------------------------------------------


def test_unauthenticated_official_sender_is_tagged() -> None:
    decision = ENGINE.evaluate(message(), Envelope(OFFICIAL, (COLLEAGUE,)))
    assert decision.verdict == "tag"
    [finding] = decision.findings
    assert (finding.rule, finding.clause, finding.location) == ("sender-not-authenticated", "1.1",
                                                                 "envelope:mail-from")


@pytest.mark.parametrize(("login", "flagged"), [
    (OFFICIAL, False), ("chuyenvien", False), ("CHUYENVIEN@quangninh.gov.vn", False),
    ("giamdoc@quangninh.gov.vn", True), ("giamdoc", True),
])
def test_sender_must_match_login(login: str, flagged: bool) -> None:
    found = rules_of(message(), Envelope(OFFICIAL, (COLLEAGUE,), authenticated_user=login))
    assert ("sender-login-mismatch" in found) is flagged


def test_official_from_sent_through_another_system_is_tagged() -> None:
    raw = message(sender="Sở Nội vụ <sonoivu@quangninh.gov.vn>")
    found = rules_of(raw, Envelope("sonoivu.qn@gmail.com", (COLLEAGUE,)))
    assert "official-identity-off-system" in found
    assert "gmail.com" in found["official-identity-off-system"]
    citizen = message(sender="Công dân <congdan@gmail.com>")
    assert rules_of(citizen, Envelope("congdan@gmail.com", (COLLEAGUE,))) == {}


def test_tls_map_lists_province_hosts(tmp_path: object) -> None:
    from pathlib import Path

    from qnprov.policy.bundle import load_policy
    from qnprov.policy.tlsmap import render_tls_policy_map

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text(
        "province_hosts:\n  - {domain: hd.quangninh.gov.vn, level: secure, match: mail.hd.quangninh.gov.vn}\n"
        "  - {domain: cp.quangninh.gov.vn, level: encrypt}\n", encoding="utf-8")
    policy = load_policy(overrides_path=overrides)
    text = render_tls_policy_map(policy.province_hosts, version=policy.version)
    assert "cp.quangninh.gov.vn\tencrypt\n" in text
    assert "hd.quangninh.gov.vn\tsecure match=mail.hd.quangninh.gov.vn\n" in text
    assert "hd.quangninh.gov.vn" in policy.province_domains


# -- 1.3(2) --------------------------------------------------------------------------------


@pytest.mark.parametrize(("domain", "expected"), [
    ("gmail.com", True), ("GMAIL.COM.", True), ("mail.yahoo.com.vn", True), ("user@outlook.com", True),
    ("quangninh.gov.vn", False), ("notgmail.com", False), ("gmail.com.evil.example", False), ("", False),
])
def test_is_freemail_handles_subdomains_and_lookalikes(domain: str, expected: bool) -> None:
    assert is_freemail(domain) is expected


def test_freemail_list_is_data() -> None:
    assert {"gmail.com", "yahoo.com.vn", "vnn.vn", "proton.me"} <= FREEMAIL_DOMAINS
    assert match_domain("a.b.qq.com", FREEMAIL_DOMAINS) == "qq.com"


def test_official_mail_to_free_mailbox_is_logged_not_blocked() -> None:
    decision = ENGINE.evaluate(message(to="canhan@gmail.com"),
                               Envelope(OFFICIAL, ("canhan@gmail.com",), authenticated_user=OFFICIAL))
    assert decision.verdict == "accept"  # default action: log (the audit trail records it)
    [finding] = decision.findings
    assert (finding.rule, finding.clause, finding.action) == ("freemail-outbound", "1.3(2)", "log")
    assert decision.add_headers == ()  # nothing about internal policy leaks to the outside


def test_citizen_writing_from_gmail_is_not_a_violation() -> None:
    assert rules_of(message(sender="congdan@gmail.com"), Envelope("congdan@gmail.com", (COLLEAGUE,))) == {}


@pytest.mark.parametrize("header", ["X-Sieve-Redirected-From: chuyenvien@quangninh.gov.vn",
                                    "Auto-Submitted: auto-forwarded"])
def test_automatic_forward_to_free_mailbox_is_rejected(header: str) -> None:
    name, _, value = header.partition(": ")
    raw = message(extra_headers={name: value})
    decision = ENGINE.evaluate(raw, Envelope(OFFICIAL, ("canhan@gmail.com",), authenticated_user=OFFICIAL))
    assert decision.verdict == "reject"
    assert decision.reply is not None and "1.3(2)" in decision.reply[2]


def test_automatic_forward_inside_the_province_is_fine() -> None:
    raw = message(extra_headers={"X-Sieve-Redirected-From": OFFICIAL})
    decision = ENGINE.evaluate(raw, Envelope(OFFICIAL, (COLLEAGUE,), authenticated_user=OFFICIAL))
    assert decision.verdict == "accept"


# -- 1.3(3) --------------------------------------------------------------------------------


def _registration(**kwargs: str) -> bytes:
    return message(subject=kwargs.get("subject", "Thông báo"), sender=kwargs.get("sender", "noreply@example.org"),
                   extra_headers={"DKIM-Signature": kwargs["dkim"]} if "dkim" in kwargs else None)


@pytest.mark.parametrize(("raw", "mail_from", "source"), [
    (_registration(sender="Facebook <security@facebookmail.com>"), "bounce@facebookmail.com", "envelope sender"),
    (_registration(sender="Shopee <no-reply@mail.shopee.vn>"), "bounces@sendgrid.net", "From"),
    (_registration(dkim="v=1; a=rsa-sha256; d=linkedin.com; s=s1; h=from; bh=x; b=y"), "bounce@mailer.example",
     "DKIM d="),
])
def test_registration_mail_is_tagged_naming_the_account(raw: bytes, mail_from: str, source: str) -> None:
    decision = ENGINE.evaluate(raw, Envelope(mail_from, (COLLEAGUE,)))
    assert decision.verdict == "tag"
    [finding] = decision.findings
    assert (finding.rule, finding.clause) == ("service-registration", "1.3(3)")
    assert f"account {COLLEAGUE}" in finding.evidence
    assert source in finding.evidence
    assert "service-registration (1.3(3))" in dict(decision.add_headers)["X-QN-Policy"]


@pytest.mark.parametrize("subject", ["Xác nhận tài khoản của bạn", "Mã xác minh: 123456", "Confirm your email",
                                     "Welcome to forum.example"])
def test_registration_subject_from_unknown_sender_is_tagged(subject: str) -> None:
    found = rules_of(_registration(subject=subject), Envelope("noreply@forum.example", (COLLEAGUE,)))
    assert "service-registration" in found


def test_registration_lookalikes_are_not_tagged() -> None:
    # A province system asking to confirm an account, and a lookalike sender domain.
    internal = _registration(subject="Xác nhận tài khoản hệ thống QLVB", sender="qlvb@quangninh.gov.vn")
    assert "service-registration" not in rules_of(internal, Envelope("qlvb@quangninh.gov.vn", (COLLEAGUE,),
                                                                     direction="inbound"))
    lookalike = _registration(sender="news@notfacebookmail.com")
    assert rules_of(lookalike, Envelope("news@notfacebookmail.com", (COLLEAGUE,))) == {}
    outbound = _registration(subject="Confirm your email")
    assert "service-registration" not in rules_of(outbound, Envelope(OFFICIAL, ("x@gmail.com",),
                                                                     authenticated_user=OFFICIAL))


def test_registration_reject_is_configurable(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text("rules:\n  service-registration:\n    action: reject\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    decision = engine.evaluate(_registration(sender="security@facebookmail.com"),
                               Envelope("security@facebookmail.com", (COLLEAGUE,)))
    assert decision.verdict == "reject"
    assert decision.reply is not None
    assert decision.reply[2].isascii() and "1.3(3)" in decision.reply[2]


def test_strongest_action_wins() -> None:
    raw = message(subject="[MẬT] Xác nhận tài khoản", sender="security@facebookmail.com")
    decision = ENGINE.evaluate(raw, Envelope("security@facebookmail.com", (COLLEAGUE,)))
    assert {f.rule for f in decision.findings} == {"classified-marking", "service-registration"}
    assert decision.verdict == "reject"


def test_reinjected_sieve_redirect_with_outside_sender_is_rejected() -> None:
    # Dovecot re-injects a redirect with the original envelope sender: here a citizen's Gmail.
    raw = message(sender="congdan@gmail.com", extra_headers={"X-Sieve-Redirected-From": COLLEAGUE})
    decision = ENGINE.evaluate(raw, Envelope("congdan@gmail.com", ("canhan.vanthu@gmail.com",)))
    assert decision.direction == "inbound"
    assert decision.verdict == "reject"
    assert [f.rule for f in decision.findings] == ["freemail-autoforward"]


def test_province_domain_without_tls_entry_is_logged(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text(
        "province_domains: [hd.quangninh.gov.vn, cp.quangninh.gov.vn]\n"
        "province_hosts:\n  - {domain: hd.quangninh.gov.vn}\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    envelope = Envelope(OFFICIAL, ("a@hd.quangninh.gov.vn", "b@cp.quangninh.gov.vn"), authenticated_user=OFFICIAL)
    decision = engine.evaluate(message(), envelope)
    assert decision.verdict == "accept"
    expected = "b@cp.quangninh.gov.vn: province domain cp.quangninh.gov.vn has no TLS policy entry"
    assert [(f.rule, f.evidence) for f in decision.findings] == [("province-route-unenforced", expected)]


def test_mailing_list_hosts_can_be_exempted_from_off_system(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text("rules:\n  official-identity-off-system:\n    params:\n"
                         "      exempt_envelope_domains: [lists.example.org]\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    raw = message(sender="Sở Nội vụ <sonoivu@quangninh.gov.vn>")
    assert engine.evaluate(raw, Envelope("bounce@lists.example.org", (COLLEAGUE,))).findings == ()
    assert engine.evaluate(raw, Envelope("x@gmail.com", (COLLEAGUE,))).verdict == "tag"
