"""Clause 1.3(1): text that an xlsx prints or shows outside its cells (issue 9, item 4).

Every workbook is written by openpyxl; text boxes are DrawingML parts wired in as Excel
writes them (openpyxl cannot create shapes).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import pytest
from office_corpus import with_text_boxes, workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.comments import Comment
from openpyxl.worksheet.worksheet import Worksheet
from policy_corpus import message

from qnprov.policy.engine import Decision, Envelope, PolicyEngine
from qnprov.policy.office import excel_header_footer_text

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")


def decide(xlsx: bytes) -> Decision:
    return ENGINE.evaluate(message(attachments=[("bang-tong-hop.xlsx", "application/octet-stream", xlsx)]), ENVELOPE)


def markings(decision: Decision) -> list[tuple[str, str]]:
    return [(f.location, f.evidence) for f in decision.findings if f.rule == "classified-marking"]


def formatted_header(text: str) -> Callable[[Worksheet], None]:
    """Red, bold, 14 pt Arial in the centre section: openpyxl writes &C&"Arial,Bold"&14 &KFF0000<text>."""
    def setup(sheet: Worksheet) -> None:
        sheet.oddHeader.left.text = "Số: 12/BC-UBND"
        sheet.oddHeader.center.text = text
        sheet.oddHeader.center.font = "Arial,Bold"
        sheet.oddHeader.center.size = 14
        sheet.oddHeader.center.color = "FF0000"
        sheet.oddHeader.right.text = "Trang &P / &N"
    return setup


def raw_header(value: str, *, footer: bool = False) -> Callable[[Worksheet], None]:
    """A header/footer value with its codes typed as Excel stores them (openpyxl writes text verbatim)."""
    def setup(sheet: Worksheet) -> None:
        target = sheet.oddFooter if footer else sheet.oddHeader
        target.center.text = value
    return setup


def comment(text: str) -> Callable[[Worksheet], None]:
    def setup(sheet: Worksheet) -> None:
        sheet["A1"].comment = Comment(text, "Văn thư")
    return setup


def chart_title(title: str) -> Callable[[Worksheet], None]:
    def setup(sheet: Worksheet) -> None:
        for row in (["Quý", "Số văn bản"], ["I", 12], ["II", 15]):
            sheet.append(row)
        chart = BarChart()
        chart.title = title
        chart.add_data(Reference(sheet, min_col=2, min_row=2, max_row=4), titles_from_data=True)
        sheet.add_chart(chart, "E2")
    return setup


# id -> (marked workbook, look-alike twin, part where the marking is found)
CASES: dict[str, tuple[Callable[[], bytes], Callable[[], bytes], str]] = {
    "header-font-size-colour": (lambda: workbook(formatted_header("TUYỆT MẬT")),
                                lambda: workbook(formatted_header("BẢO MẬT")), "xl/worksheets/sheet1.xml"),
    "header-raw-codes": (lambda: workbook(raw_header('&"Times New Roman,Bold"&14&KFF0000TUYỆT MẬT')),
                         lambda: workbook(raw_header('&"Times New Roman,Bold"&14&KFF0000MẬT KHẨU')),
                         "xl/worksheets/sheet1.xml"),
    "header-theme-colour-and-styles": (lambda: workbook(raw_header("&K01+000&B&UTỐI MẬT&B&U")),
                                       lambda: workbook(raw_header("&K01+000&B&UMẬT ĐỘ&B&U")),
                                       "xl/worksheets/sheet1.xml"),
    "header-left-centre-right-and-ampersand": (
        lambda: workbook(raw_header("&LSở KH&&ĐT&C&\"Arial,Bold\"MẬT&R&D")),
        lambda: workbook(raw_header("&LSở KH&&ĐT&C&\"Arial,Bold\"THÂN MẬT&R&D")), "xl/worksheets/sheet1.xml"),
    "footer-codes": (lambda: workbook(raw_header("&C&KFF0000&BMẬT", footer=True)),
                     lambda: workbook(raw_header("&C&KFF0000&BBẢO MẬT", footer=True)), "xl/worksheets/sheet1.xml"),
    "text-box": (lambda: with_text_boxes(workbook(lambda _: None), [[["Số: 7/KH-UBND"]], [["TUYỆT ", "MẬT"]]]),
                 lambda: with_text_boxes(workbook(lambda _: None), [[["Số: 7/KH-UBND"]], [["BẢO ", "MẬT"]]]),
                 "xl/drawings/drawing1.xml"),
    "text-box-metadata": (lambda: with_text_boxes(workbook(lambda _: None), [[["Độ mật: Tối mật"]]]),
                          lambda: with_text_boxes(workbook(lambda _: None), [[["Độ khẩn: Khẩn"]]]),
                          "xl/drawings/drawing1.xml"),
    "comment": (lambda: workbook(comment("MẬT")), lambda: workbook(comment("Mật khẩu: xem sổ")),
                "xl/comments/comment1.xml"),
    "chart-title": (lambda: workbook(chart_title("TỐI MẬT")), lambda: workbook(chart_title("Mật độ dân số")),
                    "xl/charts/chart1.xml"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_marking_outside_the_cells_is_found(case: str) -> None:
    marked, _, part = CASES[case]
    data = marked()
    assert part in zipfile.ZipFile(io.BytesIO(data)).namelist()  # the builder put the text where we claim
    decision = decide(data)
    assert decision.verdict == "reject", decision.findings
    assert [loc for loc, _ in markings(decision)] == [f"attachment:bang-tong-hop.xlsx/{part}"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_lookalike_outside_the_cells_is_accepted(case: str) -> None:
    _, twin, _ = CASES[case]
    decision = decide(twin())
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


@pytest.mark.parametrize(("value", "printed"), [
    ('&"Arial,Bold"&14&KFF0000TUYỆT MẬT', "TUYỆT MẬT"),
    ('&L&"Times New Roman,Regular"Số: 5/BC&C&14 &KFF0000MẬT&RTrang &P/&N', "\tSố: 5/BC\t MẬT\tTrang  / "),
    ("Sở KH&&ĐT", "Sở KH&ĐT"),
    ("A&&KFF0000B", "A&KFF0000B"),  # "&&" is an ampersand; the "K..." after it is text, not a colour
    ("&K05-050&I&S&X&Y&O&H&EMẬT", "MẬT"),
    ("&GMẬT&Z", " MẬT "),  # a picture or a path prints something: a field is a separator
    ("&LCông ty A&&B&CTỐI MẬT", "\tCông ty A&B\tTỐI MẬT"),
])
def test_excel_header_footer_codes_are_stripped(value: str, printed: str) -> None:
    assert excel_header_footer_text(value) == printed
