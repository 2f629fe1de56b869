"""Clause 1.3(1): markings in an Office file's metadata, not its body (issue 9, item 4).

xlsx sheet names (attributes of xl/workbook.xml) and document properties (docProps/core.xml,
app.xml; ODF meta.xml), each property a field of its own. Workbooks are written by openpyxl,
documents by python-docx; the ODF meta.xml is the one LibreOffice writes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import docx
import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet
from policy_corpus import message, odt

from qnprov.policy.engine import Decision, Envelope, PolicyEngine
from qnprov.policy.office_meta import element_lines

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")


def decide(name: str, data: bytes) -> Decision:
    return ENGINE.evaluate(message(attachments=[(name, "application/octet-stream", data)]), ENVELOPE)


def markings(decision: Decision) -> list[tuple[str, str]]:
    return [(f.location, f.evidence) for f in decision.findings if f.rule == "classified-marking"]


def xlsx(setup: Callable[[openpyxl.Workbook], None]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert isinstance(sheet, Worksheet)
    sheet.append(["Báo cáo tình hình", "2026"])
    setup(book)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def sheet_titles(*titles: str) -> Callable[[openpyxl.Workbook], None]:
    def setup(book: openpyxl.Workbook) -> None:
        assert book.active is not None
        book.active.title = titles[0]
        for title in titles[1:]:
            book.create_sheet(title).sheet_state = "hidden"
    return setup


@pytest.mark.parametrize(("titles", "evidence"), [
    (("TỐI MẬT",), "Tối mật (stamp): TỐI MẬT"),
    (("Tổng hợp", "MẬT"), "Mật (stamp): MẬT"),  # a hidden second sheet
    (("Độ mật - Tuyệt mật",), "Tuyệt mật (metadata): Độ mật - Tuyệt mật"),
])
def test_xlsx_sheet_name_marking_is_found(titles: tuple[str, ...], evidence: str) -> None:
    decision = decide("bang.xlsx", xlsx(sheet_titles(*titles)))
    assert decision.verdict == "reject", decision.findings
    assert markings(decision) == [("attachment:bang.xlsx/xl/workbook.xml", evidence)]


@pytest.mark.parametrize("titles", [("Bảo mật",), ("Mật độ dân số", "Mật khẩu")])
def test_xlsx_ordinary_sheet_names_are_accepted(titles: tuple[str, ...]) -> None:
    decision = decide("bang.xlsx", xlsx(sheet_titles(*titles)))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


PROPERTY_CASES = [(field, value) for field in ("keywords", "subject", "category", "title", "description")
                  for value in ("TUYỆT MẬT", "Độ mật: Tối mật")]
EVIDENCE = {"TUYỆT MẬT": "Tuyệt mật (stamp): TUYỆT MẬT", "Độ mật: Tối mật": "Tối mật (metadata): Độ mật: Tối mật"}


@pytest.mark.parametrize(("field", "value"), PROPERTY_CASES)
def test_xlsx_core_property_marking_is_found(field: str, value: str) -> None:
    def setup(book: openpyxl.Workbook) -> None:
        setattr(book.properties, field, value)
    decision = decide("bang.xlsx", xlsx(setup))
    assert decision.verdict == "reject", decision.findings
    assert markings(decision) == [("attachment:bang.xlsx/docProps/core.xml", EVIDENCE[value])]


@pytest.mark.parametrize(("field", "value"), [(f.replace("description", "comments"), v) for f, v in PROPERTY_CASES])
def test_docx_core_property_marking_is_found(field: str, value: str) -> None:
    document = docx.Document()
    document.add_paragraph("Kính gửi các phòng ban.")
    setattr(document.core_properties, field, value)
    buffer = io.BytesIO()
    document.save(buffer)
    decision = decide("cong-van.docx", buffer.getvalue())
    assert decision.verdict == "reject", decision.findings
    assert markings(decision) == [("attachment:cong-van.docx/docProps/core.xml", EVIDENCE[value])]


@pytest.mark.parametrize("value", ["Bảo mật thông tin", "mật độ; mật khẩu"])
def test_ordinary_core_properties_are_accepted(value: str) -> None:
    def setup(book: openpyxl.Workbook) -> None:
        book.properties.keywords = value
        book.properties.category = value
    decision = decide("bang.xlsx", xlsx(setup))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


def test_core_properties_are_one_line_each() -> None:
    core = zipfile.ZipFile(io.BytesIO(xlsx(lambda book: setattr(book.properties, "keywords", "TUYỆT MẬT"))))
    lines = element_lines(core.read("docProps/core.xml")).splitlines()
    assert lines[0] == "openpyxl"  # the creator, no longer run together with the keywords
    assert lines[-1] == "TUYỆT MẬT"


_ODF_META = (
    '<?xml version="1.0" encoding="UTF-8"?><office:document-meta '
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" office:version="1.3"><office:meta>'
    "<meta:creation-date>2026-11-20T08:12:00</meta:creation-date><dc:date>2026-11-20T09:00:00</dc:date>"
    "<meta:generator>LibreOffice/7.4.7.2$Linux_X86_64 LibreOffice_project/40$Build-2</meta:generator>"
    "<meta:keyword>báo cáo</meta:keyword><meta:keyword>{keyword}</meta:keyword>"
    '<meta:document-statistic meta:page-count="1"/></office:meta></office:document-meta>'
)


def odt_with_meta(keyword: str) -> bytes:
    buffer = io.BytesIO(odt(["Kính gửi các phòng ban."]))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("meta.xml", _ODF_META.format(keyword=keyword))
    return buffer.getvalue()


@pytest.mark.parametrize(("keyword", "evidence"), [("MẬT", "Mật (stamp): MẬT"),
                                                   ("Độ mật: Tối mật", EVIDENCE["Độ mật: Tối mật"])])
def test_odf_meta_keyword_marking_is_found(keyword: str, evidence: str) -> None:
    decision = decide("cong-van.odt", odt_with_meta(keyword))
    assert decision.verdict == "reject", decision.findings
    assert markings(decision) == [("attachment:cong-van.odt/meta.xml", evidence)]


def test_odf_meta_ordinary_keyword_is_accepted() -> None:
    decision = decide("cong-van.odt", odt_with_meta("bảo mật"))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


def ods(sheet_name: str) -> bytes:
    """An ODF spreadsheet as LibreOffice Calc stores it: the sheet name is table:name."""
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:spreadsheet>'
        f'<table:table table:name="{sheet_name}" table:style-name="ta1"><table:table-row>'
        "<table:table-cell><text:p>Sở Nội vụ</text:p></table:table-cell>"
        '<table:table-cell office:value-type="float" office:value="12"><text:p>12</text:p></table:table-cell>'
        "</table:table-row></table:table></office:spreadsheet></office:body></office:document-content>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def test_ods_sheet_name_marking_is_found() -> None:
    decision = decide("bang.ods", ods("TUYỆT MẬT"))
    assert decision.verdict == "reject", decision.findings
    assert markings(decision) == [("attachment:bang.ods/content.xml", "Tuyệt mật (stamp): TUYỆT MẬT")]


def test_ods_ordinary_sheet_name_is_accepted() -> None:
    decision = decide("bang.ods", ods("Mật độ dân số"))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()
