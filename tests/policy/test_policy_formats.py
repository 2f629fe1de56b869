"""Clause 1.3(1) in every carrier format: positives and look-alike negatives, built here."""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Callable

import pytest
from policy_corpus import (
    docx,
    message,
    nested_zip,
    odt,
    pdf,
    pptx,
    to_cp1258,
    xlsx,
    zip_of,
)

from qnprov.policy.engine import Decision, Envelope, PolicyEngine

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")
OCTET = "application/octet-stream"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

LOOKALIKE = "Đề nghị đổi mật khẩu, tăng cường BẢO MẬT; Luật Bảo vệ bí mật nhà nước; mật độ; mật ong; GIẢI MẬT"


def decide(raw: bytes) -> Decision:
    return ENGINE.evaluate(raw, ENVELOPE)


def marking_locations(decision: Decision) -> list[str]:
    return [f.location for f in decision.findings if f.rule == "classified-marking"]


def attach(name: str, data: bytes, ctype: str = OCTET) -> bytes:
    return message(attachments=[(name, ctype, data)])


# Each case: id -> (builder of a marked message, builder of its look-alike twin, expected location prefix)
Case = tuple[Callable[[], bytes], Callable[[], bytes], str]
CASES: dict[str, Case] = {
    "subject-rfc2047": (lambda: message(subject="[TỐI MẬT] V/v kế hoạch"),
                        lambda: message(subject="V/v đổi mật khẩu hộp thư"), "subject"),
    "body-base64": (lambda: message(body="Số: 15/UBND-VX\nMẬT\nKính gửi...", body_cte="base64"),
                    lambda: message(body=LOOKALIKE, body_cte="base64"), "body"),
    "body-quoted-printable": (lambda: message(body="Độ mật: Tuyệt mật\n", body_cte="quoted-printable"),
                              lambda: message(body=LOOKALIKE, body_cte="quoted-printable"), "body"),
    "body-8bit": (lambda: message(body="TUYỆT MẬT\n", body_cte="8bit"),
                  lambda: message(body=LOOKALIKE, body_cte="8bit"), "body"),
    "body-windows-1258": (lambda: message(raw_body_bytes=to_cp1258("Độ mật: Tối mật\nTỐI MẬT\n"),
                                          charset="windows-1258"),
                          lambda: message(raw_body_bytes=to_cp1258(LOOKALIKE), charset="windows-1258"), "body"),
    "body-nfd": (lambda: message(body=unicodedata.normalize("NFD", "MẬT\nBáo cáo")),
                 lambda: message(body=unicodedata.normalize("NFD", LOOKALIKE)), "body"),
    "body-html-cell": (lambda: message(html="<table><tr><td>Số: 5/BC</td><td><b>MẬT</b></td></tr></table>"),
                       lambda: message(html=f"<p><b>{LOOKALIKE}</b></p>"), "body"),
    "docx-body": (lambda: attach("cv.docx", docx(body="Số: 12/BC-UBND\nTỐI MẬT\nBáo cáo"), DOCX_TYPE),
                  lambda: attach("cv.docx", docx(body=LOOKALIKE), DOCX_TYPE), "attachment:cv.docx"),
    "docx-header": (lambda: attach("cv.docx", docx(header="MẬT")),
                    lambda: attach("cv.docx", docx(header="BẢO MẬT THÔNG TIN")), "attachment:cv.docx"),
    "docx-footer": (lambda: attach("cv.docx", docx(footer="TUYỆT MẬT")),
                    lambda: attach("cv.docx", docx(footer="Mật khẩu: xem phụ lục")), "attachment:cv.docx"),
    "docx-table": (lambda: attach("cv.docx", docx(table=[["Số: 7/KH-UBND", "MẬT"], ["", ""]])),
                   lambda: attach("cv.docx", docx(table=[["Mật độ", "Mật ong"]])), "attachment:cv.docx"),
    "docx-textbox": (lambda: attach("cv.docx", docx(textbox="TỐI MẬT")),
                     lambda: attach("cv.docx", docx(textbox="THÂN MẬT")), "attachment:cv.docx"),
    "xlsx-cell": (lambda: attach("bang.xlsx", xlsx([["Tên", "Độ mật"], ["Báo cáo", "MẬT"]])),
                  lambda: attach("bang.xlsx", xlsx([["Mật độ", "Mật khẩu"]])), "attachment:bang.xlsx"),
    "xlsx-metadata-row": (lambda: attach("bang.xlsx", xlsx([["Độ mật", "Tối mật"]])),
                          lambda: attach("bang.xlsx", xlsx([["Độ mật", "Thường"]])), "attachment:bang.xlsx"),
    "xlsx-header": (lambda: attach("bang.xlsx", xlsx([["x"]], header="MẬT")),
                    lambda: attach("bang.xlsx", xlsx([["x"]], header="BẢO MẬT")), "attachment:bang.xlsx"),
    "pptx": (lambda: attach("slide.pptx", pptx(["TUYỆT MẬT", "Kế hoạch"])),
             lambda: attach("slide.pptx", pptx([LOOKALIKE])), "attachment:slide.pptx"),
    "odt-body": (lambda: attach("vb.odt", odt(["TỐI MẬT", "Nội dung"])),
                 lambda: attach("vb.odt", odt([LOOKALIKE])), "attachment:vb.odt"),
    "odt-header": (lambda: attach("vb.odt", odt(["x"], header="MẬT")),
                   lambda: attach("vb.odt", odt(["x"], header="MẬT KHẨU")), "attachment:vb.odt"),
    "odt-table": (lambda: attach("vb.odt", odt(["x"], table=[["Độ mật", "Mật"]])),
                  lambda: attach("vb.odt", odt(["x"], table=[["Độ khẩn", "Khẩn"]])), "attachment:vb.odt"),
    "pdf-text-layer": (lambda: attach("qd.pdf", pdf(["Số: 1/QĐ-UBND", "TUYỆT MẬT"]), "application/pdf"),
                       lambda: attach("qd.pdf", pdf(["Đổi mật khẩu", "BẢO MẬT"]), "application/pdf"),
                       "attachment:qd.pdf"),
    "zip-nested": (lambda: attach("hs.zip", nested_zip("cv.docx", docx(textbox="MẬT"), 3), "application/zip"),
                   lambda: attach("hs.zip", nested_zip("cv.docx", docx(body=LOOKALIKE), 3), "application/zip"),
                   "attachment:hs.zip/"),
    "zip-plain-text": (lambda: attach("a.zip", zip_of({"ghichu.txt": "Độ mật: Mật".encode()})),
                       lambda: attach("a.zip", zip_of({"ghichu.txt": LOOKALIKE.encode()})), "attachment:a.zip/"),
    "gzip": (lambda: attach("note.txt.gz", gzip.compress("TỐI MẬT\n".encode())),
             lambda: attach("note.txt.gz", gzip.compress(LOOKALIKE.encode())), "attachment:note.txt.gz/"),
    "message-rfc822": (
        lambda: attach("fwd.eml", message(subject="Fwd", attachments=[("a.docx", OCTET, docx(header="MẬT"))]),
                       "message/rfc822"),
        lambda: attach("fwd.eml", message(subject="Fwd", attachments=[("a.docx", OCTET, docx(body=LOOKALIKE))]),
                       "message/rfc822"),
        "attachment:fwd.eml/"),
    "rfc822-subject": (lambda: attach("fwd.eml", message(subject="TỐI MẬT - kế hoạch"), "message/rfc822"),
                       lambda: attach("fwd.eml", message(subject="Kế hoạch bảo mật"), "message/rfc822"),
                       "attachment:fwd.eml/subject"),
    "docx-wrong-extension": (lambda: attach("SCAN001.JPG", docx(textbox="MẬT"), "image/jpeg"),
                             lambda: attach("SCAN001.JPG", docx(body=LOOKALIKE), "image/jpeg"),
                             "attachment:SCAN001.JPG"),
    "pdf-as-octet-stream": (lambda: attach("FILE.DAT", pdf(["TỐI MẬT"])),
                            lambda: attach("FILE.DAT", pdf([LOOKALIKE])), "attachment:FILE.DAT"),
    "text-as-octet-stream": (lambda: attach("ghi chu", "Độ mật: Tuyệt mật".encode()),
                             lambda: attach("ghi chu", LOOKALIKE.encode()), "attachment:ghi chu"),
    "rtf": (lambda: attach("cv.rtf", rb"{\rtf1\ansi\ansicpg1258 {\b T\u7888?I M\u7852?T}\par}"),
            lambda: attach("cv.rtf", rb"{\rtf1\ansi\ansicpg1258 B\u7842?O M\u7852?T\par}"), "attachment:cv.rtf"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_marked_content_is_rejected_at_its_location(case: str) -> None:
    marked, _, location = CASES[case]
    decision = decide(marked())
    assert decision.verdict == "reject", decision.findings
    assert any(loc.startswith(location) for loc in marking_locations(decision)), decision.findings
    assert decision.reply is not None and "1.3(1)" in decision.reply[2]


@pytest.mark.parametrize("case", sorted(CASES))
def test_lookalike_twin_is_accepted(case: str) -> None:
    _, lookalike, _ = CASES[case]
    decision = decide(lookalike())
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


def test_pdf_without_text_layer_is_reported_not_passed_silently() -> None:
    decision = decide(attach("scan.pdf", pdf([], text_layer=False), "application/pdf"))
    assert decision.verdict == "tag"
    [finding] = decision.findings
    assert (finding.rule, finding.clause, finding.location) == ("classified-no-text-layer", "1.3(1)",
                                                                 "attachment:scan.pdf")
    assert "no text layer" in finding.evidence
    assert dict(decision.add_headers)["X-QN-Policy"].startswith("tag;")


def test_legacy_doc_utf16_text_is_read() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "\rTỐI MẬT\rNội dung\r".encode("utf-16-le") + bytes(64)
    decision = decide(attach("cu.doc", ole, "application/msword"))
    assert decision.verdict == "reject"


def test_signed_message_is_never_modified() -> None:
    raw = attach("cv.docx", docx(body="Báo cáo"))
    before = bytes(raw)
    decide(raw)
    assert raw == before


CUSTOM_PROPS = (
    '<?xml version="1.0" encoding="UTF-8"?><Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
    'custom-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
    '<property fmtid="{{D5CDD505-2E9C-101B-9397-08002B2CF9AE}}" pid="2" name="{name}"><vt:lpwstr>{value}</vt:lpwstr>'
    "</property></Properties>"
)


@pytest.mark.parametrize(("runs", "marked"), [
    ([("M", False), ("Ậ", False), ("T", False)], True),  # a stamp split across runs
    ([("tối mật", True)], True),  # typed lower case, displayed upper case by <w:caps/>
    ([("tối mật", False)], False),
    ([("đổi mật khẩu", True)], False),
])
def test_docx_runs_and_caps_formatting(runs: list[tuple[str, bool]], marked: bool) -> None:
    from policy_corpus import docx_runs

    decision = decide(attach("cv.docx", docx_runs(runs)))
    assert (decision.verdict == "reject") is marked, decision.findings


@pytest.mark.parametrize(("name", "value", "marked"), [
    ("Độ mật", "Tối mật", True), ("Độ mật", "Thường", False), ("Người ký", "Nguyễn Văn Mật", False),
])
def test_docx_custom_property_metadata(name: str, value: str, marked: bool) -> None:
    from policy_corpus import with_zip_entry

    data = with_zip_entry(docx(), "docProps/custom.xml", CUSTOM_PROPS.format(name=name, value=value))
    decision = decide(attach("cv.docx", data))
    assert (decision.verdict == "reject") is marked, decision.findings
    if marked:
        assert marking_locations(decision) == ["attachment:cv.docx/docProps/custom.xml"]


@pytest.mark.parametrize(("subject", "marked"), [
    ("\u041c\u1eac\u0422", True),  # Cyrillic М and Т around a Latin Ậ
    ("\uff2d\u1eac\uff34 - báo cáo", True),  # full-width M and T
    ("[Mật] V/v kế hoạch", True),
    ("[tối mật] V/v kế hoạch", True),
    ("[Mật khẩu] hướng dẫn", False),
    ("Ông Nguyễn Văn Mật (Phòng TC)", False),
])
def test_subject_evasions_and_bracket_tags(subject: str, marked: bool) -> None:
    decision = decide(message(subject=subject))
    assert (decision.verdict == "reject") is marked, decision.findings


def test_html_character_reference_stamp_is_found() -> None:
    decision = decide(message(html="<table><tr><td>S&#7889;: 5</td><td>M&#7852;T</td></tr></table>"))
    assert decision.verdict == "reject"


@pytest.mark.parametrize(("text", "on_run", "marked"), [
    ("tối mật", False, True), ("tối mật", True, True), ("đổi mật khẩu", False, False), ("bảo mật", True, False),
])
def test_docx_caps_from_a_style(text: str, on_run: bool, marked: bool) -> None:
    from policy_corpus import docx_caps_style

    decision = decide(attach("cv.docx", docx_caps_style(text, on_run=on_run)))
    assert (decision.verdict == "reject") is marked, decision.findings


@pytest.mark.parametrize(("cell", "marked"), [("tối mật", True), ("m&#7853;t", True), ("đổi mật khẩu", False)])
def test_html_css_uppercase_is_matched_as_displayed(cell: str, marked: bool) -> None:
    html = f'<table><tr><td>Số: 5/BC</td><td style="color:red; text-transform: uppercase">{cell}</td></tr></table>'
    assert (decide(message(html=html)).verdict == "reject") is marked


@pytest.mark.parametrize(("span", "marked"), [("tối mật", True), ("mật khẩu", False)])
def test_odt_uppercase_text_style(span: str, marked: bool) -> None:
    decision = decide(attach("vb.odt", odt(["x"], uppercase_span=span)))
    assert (decision.verdict == "reject") is marked, decision.findings


def _pdf_with(add: Callable[[object], None]) -> bytes:
    import pymupdf

    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), "QUYET DINH", fontsize=12)
    add(page)
    data = bytes(document.tobytes())
    document.close()
    return data


@pytest.mark.parametrize(("kind", "text", "marked"), [
    ("freetext", "TỐI MẬT", True), ("freetext", "BẢO MẬT", False),
    ("field", "Tuyệt mật", True), ("field", "Thường", False),
])
def test_pdf_annotations_and_form_fields(kind: str, text: str, marked: bool) -> None:
    import pymupdf

    def add(page: object) -> None:
        assert isinstance(page, pymupdf.Page)
        if kind == "freetext":
            page.add_freetext_annot(pymupdf.Rect(72, 100, 300, 140), text, fontsize=14)
        else:
            widget = pymupdf.Widget()
            widget.field_type = pymupdf.PDF_WIDGET_TYPE_TEXT  # type: ignore[attr-defined]
            widget.field_name = "Độ mật"
            widget.field_label = "Độ mật"
            widget.field_value = text
            widget.rect = pymupdf.Rect(72, 100, 300, 130)
            page.add_widget(widget)

    decision = decide(attach("qd.pdf", _pdf_with(add), "application/pdf"))
    assert (decision.verdict == "reject") is marked, decision.findings


def test_pdf_inspection_does_not_load_pymupdf_addons() -> None:
    """The evaluator imports PyMuPDF without the layout model (onnxruntime) or pymupdf4llm,
    whether or not they are installed; text extraction is the same without them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qnprov.policy.pdf import _pymupdf\n"
        "m = _pymupdf()\n"
        "print(m._get_layout is None, 'onnxruntime' in sys.modules, bool(sys.modules.get('pymupdf4llm')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False", "False"]
