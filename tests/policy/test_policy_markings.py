"""Clause 1.3(1) marking matcher: stamp forms match, the many ordinary words with "mật" do not."""

from __future__ import annotations

import unicodedata
from typing import Literal

import pytest

from qnprov.policy.bundle import load_policy
from qnprov.policy.markings import MarkingMatcher, normalise_text

MATCHER = MarkingMatcher(load_policy().markings, declassified_is_marking=False)

POSITIVES = [
    ("MẬT", "Mật"),
    ("TỐI MẬT", "Tối mật"),
    ("TUYỆT MẬT", "Tuyệt mật"),
    ("   TỐI  MẬT   ", "Tối mật"),
    ("[MẬT] V/v kế hoạch", "Mật"),
    ("TUYỆT MẬT - Báo cáo số 12", "Tuyệt mật"),
    ("Số: 12/BC-UBND\t\tMẬT", "Mật"),
    ("Số: 12/BC-UBND        TỐI MẬT", "Tối mật"),
    ("| MẬT |", "Mật"),
    ("Độ mật: Tối mật", "Tối mật"),
    ("Độ mật : Tuyệt mật", "Tuyệt mật"),
    ("ĐỘ MẬT: MẬT", "Mật"),
    ("Độ mật\tMật", "Mật"),
    ("Mức độ mật: Mật", "Mật"),
    ("Độ mật: A", "Tuyệt mật"),
    ("Độ mật: B", "Tối mật"),
    ("Độ mật: C", "Mật"),
    ("Ðộ mật: Tối mật", "Tối mật"),  # U+00D0 typed for Đ
    ("MẬT - KHẨN", "Mật"),
    ("TỐI\u00a0MẬT", "Tối mật"),  # no-break space
    ("MẬ\u200bT", "Mật"),  # zero-width space inside the stamp
    ("Độ mật: Mật. Độ khẩn: Khẩn", "Mật"),
    ("Độ mật: Tối mật; Số trang: 3", "Tối mật"),
    ("MẬT\tMẬT", "Mật"),  # the same stamp twice is still a stamp
]

NEGATIVES = [
    "Đề nghị đổi mật khẩu hộp thư trước ngày 30/11.",
    "HƯỚNG DẪN ĐỔI MẬT KHẨU",
    "Tăng cường bảo mật thông tin.",
    "BẢO MẬT",
    "Luật Bảo vệ bí mật nhà nước 2018",
    "BÍ MẬT NHÀ NƯỚC",
    "Mật độ dân số tăng.",
    "Mật ong rừng Ba Chẽ",
    "Quan hệ thân mật, mật thiết giữa hai đơn vị",
    "Ứng dụng mật mã dân sự",
    "Bệnh túi mật",
    "Nguyễn Văn Mật",
    "NGUYỄN VĂN MẬT",
    "Mật",  # title case alone: not a stamp form
    "mật",
    "GIẢI MẬT",  # declassified: not a marking unless configured
    "KHẨN",
    "THƯỢNG KHẨN",
    "HỎA TỐC",
    "LƯU HÀNH NỘI BỘ",
    "XEM XONG TRẢ LẠI",
    "Độ mật: Thường",
    "Độ mật: Bình thường",
    "Độ mật: Không mật",
    "độ mật cao của dữ liệu",
    "Tài liệu mật phải được quản lý chặt chẽ.",
    "TÀI LIỆU MẬT",
    "MAT",  # diacritics stripped never matches
    "TOI MAT",
    "Độ mật: Mất",
    "Tiền mặt, tôi mất, mắt, mát",
    "A B C",
    "Phụ lục A",
    # Legal and training texts that explain the levels in prose are not marked documents.
    "Các độ mật: Tuyệt mật, Tối mật và Mật.",
    "Ba mức: TUYỆT MẬT / TỐI MẬT / MẬT",
    "Bí mật nhà nước được phân loại theo ba độ mật: Tuyệt mật, Tối mật và Mật.",
    "Các mức độ mật gồm TUYỆT MẬT, TỐI MẬT và MẬT.",
    "The levels are TUYỆT MẬT, TỐI MẬT and MẬT.",
    "Các mức độ mật: TUYỆT MẬT | TỐI MẬT | MẬT",
    "Độ mật của văn bản được phân loại gồm: Tuyệt mật, Tối mật, Mật",
    "BẢO MẬT MẬT KHẨU",
    # Letter-spaced words that merely contain "mật" are no stamp.
    "B Ả O   M Ậ T",
    "N G U Y Ễ N   V Ă N   M Ậ T",
    "m ậ t   k h ẩ u",
    "b í   m ậ t   n h à   n ư ớ c",
    "M Ậ T K H Ẩ U",
]

# A marked document does not pass because a second level is written beside the first:
# a stamp line or a metadata field naming several levels reports the highest.
SEVERAL_LEVELS = [
    ("TỐI MẬT | MẬT", "Tối mật"),
    ("MẬT | TỐI MẬT", "Tối mật"),
    ("Độ mật: Tối mật, Mật", "Tối mật"),
    ("Độ mật: Mật, Tối mật", "Tối mật"),
    ("Độ mật: Tuyệt mật, Tối mật, Mật", "Tuyệt mật"),  # a field, even when it lists all three
    ("Độ mật: A, B hoặc C", "Tuyệt mật"),
    ("TUYỆT MẬT, TỐI MẬT, MẬT", "Tuyệt mật"),  # stamps alone, even all three
    ("Số: 12/BC-UBND\tTỐI MẬT\tMẬT", "Tối mật"),
    ("[Mật][Tối mật] V/v kế hoạch", "Tối mật"),
    ("Tên tài liệu: Báo cáo\tĐộ mật: Mật / Tối mật", "Tối mật"),
    # Prose that names every level but has no explanatory word is no training text.
    ("Theo Luật, tài liệu TUYỆT MẬT, TỐI MẬT, MẬT phải được quản lý", "Tối mật"),
    ("TỐI MẬT & MẬT", "Tối mật"),
    ("MẬT TỐI MẬT", "Tối mật"),  # side by side, no separator
    ("TỐI MẬT MẬT", "Tối mật"),
    ("ĐỘ MẬT: TỐI MẬT | MẬT", "Tối mật"),
    ("Độ mật\tTối mật, Mật", "Tối mật"),  # a table row: label cell, value cell
    ("Độ mật: Tối mật hoặc Mật", "Tối mật"),
    ("Độ mật: B, C", "Tối mật"),
]

# Stamps set or extracted letter by letter, with any kind of space, in any case.
LETTER_SPACED = [
    ("T U Y Ệ T   M Ậ T", "Tuyệt mật"),
    ("M Ậ T", "Mật"),
    ("T Ố I   M Ậ T", "Tối mật"),
    ("T Ố I M Ậ T", "Tối mật"),  # evenly spaced
    ("T\u00a0Ố\u00a0I\u2002\u2002M\u00a0Ậ\u00a0T", "Tối mật"),  # NBSP and en spaces
    ("T\u2009U\u2009Y\u2009Ệ\u2009T\u3000M\u2009Ậ\u2009T", "Tuyệt mật"),  # thin and ideographic
    ("t ố i   m ậ t", "Tối mật"),
    ("Số: 12/BC-UBND        T Ố I   M Ậ T", "Tối mật"),
    ("M Ậ T   K H Ẩ N", "Mật"),
    ("Đ ộ   m ậ t :   T ố i   m ậ t", "Tối mật"),
    ("T Ố I   M Ậ T  |  M Ậ T", "Tối mật"),
]


@pytest.mark.parametrize(("text", "level"), POSITIVES)
def test_stamp_and_metadata_forms_match(text: str, level: str) -> None:
    hits = MATCHER.find(normalise_text(text))
    assert [hit.level for hit in hits][:1] == [level]


@pytest.mark.parametrize(("text", "level"), SEVERAL_LEVELS)
def test_several_levels_on_a_stamp_line_or_field_report_the_highest(text: str, level: str) -> None:
    hits = MATCHER.find(normalise_text(text))
    assert hits and hits[0].level == level, hits


@pytest.mark.parametrize(("text", "level"), LETTER_SPACED)
@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_letter_spaced_stamps_match(text: str, level: str, form: Literal["NFC", "NFD"]) -> None:
    hits = MATCHER.find(normalise_text(unicodedata.normalize(form, text)))
    assert hits and hits[0].level == level, hits


EXPLAINED_LISTS = [
    "Bí mật nhà nước được phân loại theo ba độ mật:\n- TUYỆT MẬT\n- TỐI MẬT\n- MẬT\nCon dấu màu đỏ.",
    "Các mức độ mật gồm:\n\n1. TUYỆT MẬT;\n2. TỐI MẬT;\n3. MẬT.",
    "The levels are, highest first:\n• TUYỆT MẬT\n• TỐI MẬT\n• MẬT",
]

NOT_EXPLAINED = [
    ("UBND TỈNH\nSố: 12/BC\nTỐI MẬT\nMẬT\nBáo cáo", "Tối mật"),  # two stamps, not a list of every level
    ("Số: 12/BC\nTUYỆT MẬT\nTỐI MẬT\nMẬT", "Tuyệt mật"),  # no explanatory line above
    ("Báo cáo gồm:\nTUYỆT MẬT\nTỐI MẬT\nMẬT\nTỐI MẬT", "Tuyệt mật"),  # a level twice: not a list of levels
    ("MẬT\nBáo cáo\nTỐI MẬT", "Tối mật"),  # the higher level is reported even on a later line
]


@pytest.mark.parametrize("text", EXPLAINED_LISTS)
def test_bulleted_list_of_every_level_under_an_explanation_is_training_text(text: str) -> None:
    assert MATCHER.find(normalise_text(text)) == []


@pytest.mark.parametrize(("text", "level"), NOT_EXPLAINED)
def test_stamp_lines_that_are_no_explained_list_match(text: str, level: str) -> None:
    hits = MATCHER.find(normalise_text(text))
    assert hits and hits[0].level == level, hits


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_words_and_other_stamps_do_not_match(text: str) -> None:
    assert MATCHER.find(normalise_text(text)) == []


@pytest.mark.parametrize("form", ["NFD", "NFKD"])
def test_decomposed_text_matches_after_normalisation(form: Literal["NFD", "NFKD"]) -> None:
    text = unicodedata.normalize(form, "TUYỆT MẬT")
    assert text != "TUYỆT MẬT"
    assert MATCHER.find(normalise_text(text))[0].level == "Tuyệt mật"


def test_circumflex_before_dot_below_order_is_normalised() -> None:
    # Some input methods put the circumflex first; NFC must reorder and compose either way.
    odd_order = "M" + "A\u0302\u0323" + "T"
    assert MATCHER.find(normalise_text(odd_order))[0].level == "Mật"


def test_windows_1258_combining_tone_marks() -> None:
    # windows-1258 stores "Ậ" as Â (0xC2) + combining dot below (0xF2).
    raw = b"T\xd4\xecI M\xc2\xf2T"
    decoded = raw.decode("windows-1258")
    assert unicodedata.normalize("NFC", decoded) != decoded
    assert MATCHER.find(normalise_text(decoded))[0].level == "Tối mật"


def test_declassified_stamp_is_configurable() -> None:
    strict = MarkingMatcher(load_policy().markings, declassified_is_marking=True)
    assert strict.find("GIẢI MẬT")[0].level == "Giải mật"
    assert MATCHER.find("GIẢI MẬT") == []


def test_evidence_is_short_and_keeps_diacritics() -> None:
    line = "x" * 300 + "\tTỐI MẬT\t" + "y" * 300
    hit = MATCHER.find(line)[0]
    assert "TỐI MẬT" in hit.evidence
    assert len(hit.evidence) < 120


@pytest.mark.parametrize(("text", "level"), POSITIVES)
def test_fast_path_prefilter_never_drops_a_positive(text: str, level: str) -> None:
    from qnprov.policy.markings import may_contain_marking, xml_may_contain_marking

    forms: tuple[Literal["NFC", "NFD", "NFKD"], ...] = ("NFC", "NFD", "NFKD")
    for form in forms:
        variant = unicodedata.normalize(form, text)
        assert may_contain_marking(variant), (form, text)
        assert xml_may_contain_marking(variant.encode()), (form, text)
    assert may_contain_marking(text.encode("utf-8").decode("utf-8"))


def test_prefilter_sees_windows_1258_and_character_references() -> None:
    from qnprov.policy.markings import may_contain_marking, xml_may_contain_marking

    assert may_contain_marking(b"M\xc2\xf2T".decode("windows-1258"))
    assert may_contain_marking("M&#7852;T") and xml_may_contain_marking(b"M&#x1EAC;T")
    assert not may_contain_marking("Kính gửi các đơn vị, đề nghị báo cáo đúng hạn.")


@pytest.mark.parametrize("flood", ["m ậ t " * 200_000, "TỐI MẬT " * 100_000, "T Ố I   M Ậ T | " * 50_000])
def test_letter_spaced_and_stamp_run_floods_stay_linear(flood: str) -> None:
    # ~1 MB on one line: the rebuild of letter-spaced runs and of stamps side by side must not
    # go quadratic (an excerpt per stamp of an 800 KB segment once took minutes).
    import time

    started = time.process_time()
    MATCHER.find(normalise_text(flood))
    assert time.process_time() - started < 5.0
