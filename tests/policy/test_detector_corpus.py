"""The 1.3(1) and 1.3(3) detectors against the generated corpus, class by class.

Each class of corpus_gen must get its own verdict: a sign-up is tagged with its service's
category (or "unknown, for review"), a marked document is rejected naming its highest
level, and nothing in a negative class is flagged by the rule under test.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from corpus_gen import (
    MARKING_NEGATIVE,
    MARKING_POSITIVE,
    OFFICIAL,
    REGISTRATION_NEGATIVE,
    REGISTRATION_POSITIVE,
    Sample,
    build_mail,
    marking_corpus,
    registration_corpus,
)

from qnprov.policy.engine import Decision, Envelope, PolicyEngine
from qnprov.policy.registration import CATEGORIES, UNKNOWN

ENGINE = PolicyEngine.load()
RULE = {"1.3(1)": "classified-marking", "1.3(3)": "service-registration"}


def _by_class(samples: list[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[sample.cls].append(sample)
    return grouped


REGISTRATIONS = _by_class(registration_corpus())
MARKINGS = _by_class(marking_corpus())


def _findings(sample: Sample) -> tuple[Decision, list[str]]:
    decision = ENGINE.evaluate(sample.raw, sample.envelope)
    return decision, [f.evidence for f in decision.findings if f.rule == RULE[sample.clause]]


def test_corpus_has_every_class_and_real_mime() -> None:
    assert set(REGISTRATIONS) == set(REGISTRATION_POSITIVE) | set(REGISTRATION_NEGATIVE)
    assert set(MARKINGS) == set(MARKING_POSITIVE) | set(MARKING_NEGATIVE)
    raw = b"\n".join(s.raw for s in REGISTRATIONS["vn-ecommerce"] + REGISTRATIONS["global-ecommerce"])
    for marker in (b"multipart/alternative", b"text/html", b"Content-Transfer-Encoding: base64",
                   b"Content-Transfer-Encoding: quoted-printable", b"=?utf-8?", b"List-Unsubscribe"):
        assert marker in raw, marker


@pytest.mark.parametrize("cls", REGISTRATION_POSITIVE)
def test_signups_are_tagged_with_their_category(cls: str) -> None:
    for sample in REGISTRATIONS[cls]:
        decision, evidence = _findings(sample)
        assert decision.verdict == "tag", (sample.note, decision.findings)
        assert len(evidence) == 1, sample.note
        label = UNKNOWN if sample.expect == "unknown" else CATEGORIES[sample.expect]
        assert f"account {OFFICIAL}: " in evidence[0]
        assert label in evidence[0], (sample.note, evidence[0])
        assert "service-registration (1.3(3))" in dict(decision.add_headers)["X-QN-Policy"]


@pytest.mark.parametrize("cls", REGISTRATION_NEGATIVE)
def test_non_signups_are_never_flagged(cls: str) -> None:
    for sample in REGISTRATIONS[cls]:
        decision, evidence = _findings(sample)
        assert evidence == [], (sample.note, evidence)
        assert decision.verdict in {"accept", "tag"}
        assert all(f.clause != "1.3(3)" for f in decision.findings)


@pytest.mark.parametrize("cls", MARKING_POSITIVE)
def test_marked_documents_are_rejected_with_their_highest_level(cls: str) -> None:
    for sample in MARKINGS[cls]:
        decision, evidence = _findings(sample)
        assert decision.verdict == "reject", (sample.note, decision.findings)
        assert evidence and evidence[0].startswith(f"{sample.expect} ("), (sample.note, evidence)


@pytest.mark.parametrize("cls", MARKING_NEGATIVE)
def test_unmarked_documents_pass(cls: str) -> None:
    for sample in MARKINGS[cls]:
        decision, evidence = _findings(sample)
        assert evidence == [], (sample.note, evidence)
        assert decision.verdict == "accept", (sample.note, decision.findings)


# -- single cases the classes rest on ---------------------------------------------------------


def _evidence(raw: bytes, mail_from: str) -> list[str]:
    decision = ENGINE.evaluate(raw, Envelope(mail_from, (OFFICIAL,)))
    return [f.evidence for f in decision.findings if f.rule == "service-registration"]


def test_gov_vn_sender_is_never_a_signup_even_with_an_otp() -> None:
    raw = build_mail(("Cổng DVC", "no-reply@dichvucong.gov.vn"), "Mã xác thực tài khoản: 482913",
                     "Mã OTP của bạn là 482913. Vui lòng xác nhận địa chỉ email của bạn.\n",
                     headers={"List-Unsubscribe": "<mailto:u@dichvucong.gov.vn>"})
    assert _evidence(raw, "bounce@dichvucong.gov.vn") == []
    # The same mail from a look-alike, non-government domain is a sign-up for review.
    lookalike = raw.replace(b"dichvucong.gov.vn", b"dichvucong-gov.vn")
    [evidence] = _evidence(lookalike, "bounce@dichvucong-gov.vn")
    assert "unknown service dichvucong-gov.vn (unknown, for review" in evidence


def test_known_brand_without_signup_intent_is_not_flagged_but_its_signup_is() -> None:
    press = build_mail(("Tiki PR", "pr@tiki.vn"), "Tiki công bố kết quả kinh doanh",
                       "Người dùng có thể tạo tài khoản miễn phí.\n",
                       headers={"List-Unsubscribe": "<mailto:u@tiki.vn>"})
    assert _evidence(press, "pr@tiki.vn") == []
    signup = build_mail(("Tiki", "no-reply@tiki.vn"), "Xác nhận email của bạn",
                        "Vui lòng nhấn vào liên kết để xác nhận địa chỉ email của bạn.\n")
    [evidence] = _evidence(signup, "no-reply@tiki.vn")
    assert "e-commerce Tiki (envelope sender tiki.vn)" in evidence


def test_body_intent_counts_only_from_automated_senders() -> None:
    text = "Chào anh, anh vui lòng xác nhận địa chỉ email của bạn giúp em nhé.\n"
    personal = build_mail(("Nguyễn Văn A", "nguyenvana@congty-abc.vn"), "Gửi anh tài liệu", text)
    assert _evidence(personal, "nguyenvana@congty-abc.vn") == []
    automated = build_mail(("ABC", "no-reply@congty-abc.vn"), "Thông báo từ ABC", text)
    [evidence] = _evidence(automated, "no-reply@congty-abc.vn")
    assert "body 'xác nhận địa chỉ email của bạn'" in evidence and "automated: sender" in evidence


def test_notify_only_domain_shows_an_account_without_signup_words() -> None:
    raw = build_mail(("Facebook", "notification@facebookmail.com"), "Bạn có 3 thông báo mới", "Xem trên Facebook.\n")
    [evidence] = _evidence(raw, "notification@facebookmail.com")
    assert evidence.startswith(f"account {OFFICIAL}: account notification at social network Facebook")


def test_welcome_from_a_person_needs_an_account_word() -> None:
    plain = build_mail(("Ban tổ chức", "btc@hoithao-abc.vn"), "Chào mừng bạn đến với Hội thảo",
                       "Hẹn gặp lại tại hội trường.\n")
    assert _evidence(plain, "btc@hoithao-abc.vn") == []
    account = build_mail(("Diễn đàn ABC", "quantri.nguyen@dien-dan-abc.vn"), "Chào mừng bạn đến với Diễn đàn ABC",
                         "Tên đăng nhập của bạn: qn_officer.\n")
    [evidence] = _evidence(account, "quantri.nguyen@dien-dan-abc.vn")
    assert "unknown service dien-dan-abc.vn" in evidence and "'Tên đăng nhập'" in evidence


@pytest.mark.parametrize(("flagged", "sender", "subject", "body"), [
    (True, ("VOZ", "noreply@voz.vn"), "Registration at VOZ Forums", "Thanks."),
    (True, ("Tinh tế", "no-reply@tinhte.vn"), "Đăng ký thành viên Tinh tế", "Xin chào."),
    (True, ("eBay", "ebay@ebay.com"), "Your eBay account is ready", "Welcome."),
    (True, ("SVC", "no-reply@svc.example"), "Sign in to SVC", "Your sign-in code is 123456"),
    (True, ("Grab", "no-reply@grab.com"), "Chào mừng bạn đến với Grab!", "Tài khoản của bạn đã sẵn sàng."),
    (True, ("Be", "hotro@be.com.vn"), "Mã xác thực", "Mã OTP: 1234"),
    (False, ("Zoom", "no-reply@zoom.us"), "Registration confirmed: Webinar on e-government", "See you."),
    (False, ("VNPT", "hoinghi@vnpt.vn"), "Xác nhận đăng ký: Diễn đàn Chính quyền số 2027", "Hẹn gặp."),
    (False, ("Tiki", "news@tiki.vn"), "Tiki: Tính năng xác thực tài khoản bằng VNeID", "Người dùng có thể xác thực."),
    (False, ("Tiki", "pr@tiki.vn"), "Tiki ra mắt tính năng xác thực tài khoản", "Thông tin báo chí."),
    (False, ("VnExpress", "no-reply@vnexpress.net"), "Welcome to VnExpress newsletter", "Thanks."),
    (False, ("Vietcombank", "no-reply@vietcombank.com.vn"), "Biến động số dư tài khoản", "Tài khoản 0123 +1,000,000"),
])
def test_intent_edge_cases(flagged: bool, sender: tuple[str, str], subject: str, body: str) -> None:
    evidence = _evidence(build_mail(sender, subject, body + "\n"), sender[1])
    assert bool(evidence) is flagged, evidence


@pytest.mark.parametrize(("flagged", "sender", "subject", "body"), [
    # A person at an unlisted domain: the subject alone is not enough, the body must agree.
    (False, ("Nguyễn Văn A", "nguyenvana@vnpt-qn.example"), "Xác nhận tài khoản phần mềm một cửa",
     "Kính gửi anh, em gửi lại danh sách tài khoản đã tạo cho Sở."),
    (True, ("Nguyễn Văn A", "nguyenvana@shop-abc.example"), "Xác nhận tài khoản",
     "Vui lòng nhấn vào liên kết để xác nhận địa chỉ email của bạn."),
    # Official correspondence and replies are never a sign-up.
    (False, ("SVC", "no-reply@svc.example"), "V/v xác nhận tài khoản quản trị", "Kính gửi Sở."),
    (False, ("SVC", "no-reply@svc.example"), "Re: Confirm your email", "Đã xác nhận, cảm ơn."),
])
def test_people_and_correspondence_need_more_than_a_subject(flagged: bool, sender: tuple[str, str], subject: str,
                                                            body: str) -> None:
    evidence = _evidence(build_mail(sender, subject, body + "\n"), sender[1])
    assert bool(evidence) is flagged, evidence


# -- held-out style edge cases (issue 9 item 4) ------------------------------------------------


def _marking(raw: bytes) -> list[str]:
    decision = ENGINE.evaluate(raw, Envelope(OFFICIAL, ("vanthu@quangninh.gov.vn",), authenticated_user=OFFICIAL))
    return [f.evidence for f in decision.findings if f.rule == "classified-marking"]


@pytest.mark.parametrize(("text", "level"), [
    ("Số: 12/BC\nT ỐI M ẬT\nBÁO CÁO", "Tối mật"),  # PDF character spacing, extracted in fragments
    ("Số: 12/BC\nT U Y ỆT \nM ẬT\nBÁO CÁO", "Tuyệt mật"),  # ... and broken over two lines
    ("Nơi nhận: như trên\tT Ố I   M Ậ T", "Tối mật"),  # a short word before letter-spaced letters
    ("Số: 12/BC\nTỐI \nMẬT\nBÁO CÁO", "Tối mật"),  # PDF word spacing broke the stamp over lines
    ("Số: 12/BC\nTUYỆT\nMẬT\nBÁO CÁO", "Tuyệt mật"),
    ("Số ký hiệu:\n15/TB-UBND\nĐộ mật:\nTối mật\nĐộ khẩn:\nThường", "Tối mật"),  # a form, one cell a line
    ("Độ mật\n\nB", "Tối mật"),  # stacked in a narrow text box or cell
    ("Số: 12/BC\nTối Mật\nBÁO CÁO", "Tối mật"),  # two-word stamp in title case
    ("Số: 12/BC\nTuyệt Mật", "Tuyệt mật"),
    ("Mức độ mật: Tuyệt mật, Tối mật, Mật", "Tuyệt mật"),  # a field naming every level, no explanation
    ("Mẫu dấu:\nTUYỆT MẬT\tTỐI MẬT", "Tuyệt mật"),  # two specimen stamps are a marked document
    ("Mẫu con dấu như sau:\nTUYỆT MẬT\tTỐI MẬT\tMẬT\tKHẨN", "Tuyệt mật"),  # a fourth stamp: no specimen row
])
def test_marking_forms_found_by_the_held_out_classes(text: str, level: str) -> None:
    [evidence, *_] = _marking(build_mail(("Chuyên viên", OFFICIAL), "Báo cáo", text + "\n",
                                         to="vanthu@quangninh.gov.vn"))
    assert evidence.startswith(f"{level} ("), evidence


@pytest.mark.parametrize("text", [
    "Mức độ mật: Tuyệt mật, Tối mật, Mật là ba mức phân loại.",
    "Mẫu con dấu các độ mật như sau:\nTUYỆT MẬT\tTỐI MẬT\tMẬT",
    "B ẢO M ẬT",  # fragments that spell an ordinary word
    "M ẬT K H ẨU",
    "ở mức tối mật",  # short prose words are never joined into a stamp
    "Tăng cường BẢO \nMẬT\nthông tin",  # PDF word spacing broke an ordinary word over lines
    "B ẢO \nM ẬT",  # ... letter-spaced as well
    "BẢO\nMẬT\nTHÔNG TIN",  # one word a line in a narrow text box
    "M ẬT \nK H ẨU",
    "Tối mật",  # prose case, not title case
    "Độ mật:\nThường",
    "Độ mật:\nTuyệt mật\nTối mật\nMật",  # a list of the levels under the label, not a value
    "Độ mật\nMật khẩu mới",
])
def test_explanations_and_ordinary_words_are_not_markings(text: str) -> None:
    assert _marking(build_mail(("Chuyên viên", OFFICIAL), "Tài liệu", text + "\n", to="vanthu@quangninh.gov.vn")) == []


@pytest.mark.parametrize(("filename", "level"), [
    ("TỐI MẬT - Kế hoạch.png", "Tối mật"),
    ("MẬT_QD_15.png", "Mật"),
    ("[Tuyệt mật] bao cao.png", "Tuyệt mật"),
    ("MẬT_KHẨU_wifi.png", ""),
    ("bao_cao_BẢO_MẬT.png", ""),
    ("Mật độ dân số.png", ""),
])
def test_markings_in_attachment_names(filename: str, level: str) -> None:
    from corpus_gen import _PNG, _named_attachment

    evidence = _marking(_named_attachment(filename, "image/png", _PNG))
    if level:
        assert len(evidence) == 1 and evidence[0].startswith(f"{level} (") and "in file name" in evidence[0]
    else:
        assert evidence == []


@pytest.mark.parametrize(("flagged", "sender", "subject", "body"), [
    (True, ("Hasaki", "no-reply@hasaki.vn"), "Xac nhan dang ky tai khoan", "Vui long xac nhan dia chi email cua ban."),
    (True, ("Shop", "cskh@shop-abc.example"), "Ma OTP cua ban", "Ma OTP cua ban la 482913."),
    (True, ("Notion", "notify@mail.notion.so"), "Your Notion signup code", "Here is your signup code: 123456"),
    (False, ("Zoom", "no-reply@zoom.us"), "Meeting Registration Approved",
     "Thank you for registering for the meeting."),
    (False, ("Văn thư", "vanthu@quangninh.gov.vn"), "Dat lai mat khau", "Ma OTP cua ban la 482913."),
    (False, ("Tiki", "news@tiki.vn"), "Ban tin Tiki: tinh nang moi", "Tao tai khoan mien phi."),
])
def test_intent_without_diacritics_and_attendance(flagged: bool, sender: tuple[str, str], subject: str,
                                                  body: str) -> None:
    evidence = _evidence(build_mail(sender, subject, body + "\n"), sender[1])
    assert bool(evidence) is flagged, evidence


BULK = {"X-MC-User": "a1b2", "List-Unsubscribe": "<https://us1.list-manage.com/unsubscribe>", "Precedence": "bulk"}


@pytest.mark.parametrize(("flagged", "sender", "subject", "body"), [
    (True, ("Quora", "noreply@quora.com"), "Please verify your Quora account", "Verify."),
    (True, ("Voucher VN", "hello@vouchervn.example"), "Chào mừng thành viên mới!", "Chúc bạn mua sắm vui vẻ."),
    (True, ("Canva", "anna@canva.com"), "Welcome to Canva, let's get started", "Design anything."),
    # A bare "welcome" in a promotion or a newsletter issue is no new account.
    (False, ("Tiki", "marketing@tiki.vn"), "Chào mừng Black Friday - giảm 50%", "Mua ngay."),
    (False, ("Morning Brew", "crew@morningbrew.example"), "Welcome to the weekend edition", "Today's stories."),
])
def test_welcome_from_bulk_senders(flagged: bool, sender: tuple[str, str], subject: str, body: str) -> None:
    evidence = _evidence(build_mail(sender, subject, body + "\n", headers=BULK), sender[1])
    assert bool(evidence) is flagged, evidence
