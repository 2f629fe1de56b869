"""Clause 1.3(1): PDFs set with very wide character and word spacing (issue 9, item 4).

Built with reportlab (``setCharSpace``/``setWordSpace``, the PDF Tc/Tw operators). At 13 pt
with a character spacing of 12, PyMuPDF's plain text is one glyph per line with no break
between words ("M\\nẬ\\nT\\nB\\nÁ\\nO"); with character plus word spacing each word is its own
line ("TÀI LIỆU " / "MẬT"). Lines are rebuilt from glyph positions (qnprov/policy/pdf_lines.py).
"""

from __future__ import annotations

import pymupdf
import pytest
from corpus_gen import pdf_char_spaced
from policy_corpus import message, pdf

from qnprov.policy.engine import Decision, Envelope, PolicyEngine
from qnprov.policy.pdf_lines import looks_fragmented, rebuild_lines

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")
LEVELS = {"TUYỆT MẬT": "Tuyệt mật", "TỐI MẬT": "Tối mật", "MẬT": "Mật"}


def decide(data: bytes) -> Decision:
    return ENGINE.evaluate(message(attachments=[("bao-cao.pdf", "application/pdf", data)]), ENVELOPE)


@pytest.mark.parametrize("stamp", sorted(LEVELS))
@pytest.mark.parametrize(("char_space", "word_space"), [(12, 0), (12, 10), (15, 0), (20, 8)])
def test_stamp_with_very_wide_character_spacing_is_found(stamp: str, char_space: float, word_space: float) -> None:
    data = pdf_char_spaced(stamp, char_space, word_space)
    plain = pymupdf.open(stream=data, filetype="pdf")[0].get_text("text")
    assert "\nM\nẬ\nT\n" in plain  # PyMuPDF's plain text: one glyph per line
    decision = decide(data)
    assert decision.verdict == "reject", decision.findings
    assert [(f.rule, f.location, f.evidence) for f in decision.findings] == [
        ("classified-marking", "attachment:bao-cao.pdf", f"{LEVELS[stamp]} (stamp): {stamp}")]


@pytest.mark.parametrize(("phrase", "char_space", "word_space"), [
    # "tài liệu mật" is the common noun ("classified documents", as in the decision's own
    # "Cấm trao đổi tài liệu mật"), not one of the three stamps; on one line it is accepted,
    # and word spacing must not turn "MẬT" into a line of its own.
    ("TÀI LIỆU MẬT", 3, 8), ("TÀI LIỆU MẬT", 5, 10), ("TÀI LIỆU MẬT", 10, 8), ("TÀI LIỆU MẬT", 12, 0),
    ("BẢO MẬT", 12, 0), ("MẬT KHẨU", 15, 10), ("THÂN MẬT", 20, 0),
])
def test_ordinary_phrase_with_wide_spacing_is_accepted(phrase: str, char_space: float, word_space: float) -> None:
    decision = decide(pdf_char_spaced(phrase, char_space, word_space))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


def test_rebuilt_lines_follow_the_glyphs() -> None:
    page = pymupdf.open(stream=pdf_char_spaced("TỐI MẬT", 12, 0), filetype="pdf")[0]
    plain = page.get_text("text")
    assert plain.splitlines()[2:9] == ["T", "Ố", "I", " ", "M", "Ậ", "T"]
    assert looks_fragmented(plain)
    rebuilt = rebuild_lines(page)
    assert rebuilt is not None
    assert rebuilt.splitlines()[:3] == ["ỦY BAN NHÂN DÂN TỈNH QUẢNG NINH", "Số: 273/BC-UBND", "TỐI MẬT"]


def test_ordinary_pdf_text_is_not_rebuilt() -> None:
    lines = ["ỦY BAN NHÂN DÂN TỈNH QUẢNG NINH", "Số: 273/BC-UBND", "Phương án A và B, mục a) và c)",
             "Kính gửi: Sở Nội vụ", "Điều 1. Ban hành kèm theo Quyết định này."]
    plain = pymupdf.open(stream=pdf(lines), filetype="pdf")[0].get_text("text")
    assert plain.splitlines() == lines
    assert not looks_fragmented(plain)


def test_page_over_the_glyph_cap_keeps_its_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild sorts a page's glyphs: over MAX_GLYPHS it is not attempted (hostile pages stay bounded)."""
    import qnprov.policy.pdf_lines as pdf_lines

    data = pdf_char_spaced("TỐI MẬT", 12, 0)
    monkeypatch.setattr(pdf_lines, "MAX_GLYPHS", 20)
    assert rebuild_lines(pymupdf.open(stream=data, filetype="pdf")[0]) is None
