"""Spreadsheets with text outside the cells, built with openpyxl (plus the DrawingML part
that openpyxl cannot write, wired in with its relationship and content type as Excel does)."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable

import openpyxl
from openpyxl.worksheet.worksheet import Worksheet

Setup = Callable[[Worksheet], None]


def workbook(setup: Setup, rows: list[list[str]] | None = None) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert isinstance(sheet, Worksheet)
    for row in rows or [["Báo cáo tình hình", "2026"]]:
        sheet.append(row)
    setup(sheet)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


_DRAWING = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<xdr:wsDr xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
    "{shapes}</xdr:wsDr>"
)
_SHAPE = (
    "<xdr:twoCellAnchor><xdr:from><xdr:col>{col}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>0</xdr:row>"
    "<xdr:rowOff>0</xdr:rowOff></xdr:from><xdr:to><xdr:col>{col_to}</xdr:col><xdr:colOff>304800</xdr:colOff>"
    "<xdr:row>2</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:to>"
    '<xdr:sp macro="" textlink=""><xdr:nvSpPr><xdr:cNvPr id="{id}" name="TextBox {id}"/>'
    '<xdr:cNvSpPr txBox="1"/></xdr:nvSpPr><xdr:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="1828800" cy="381000"/>'
    '</a:xfrm><a:prstGeom prst="rect"><a:avLst/></a:prstGeom><a:ln w="28575" cmpd="dbl"><a:solidFill>'
    '<a:srgbClr val="FF0000"/></a:solidFill></a:ln></xdr:spPr><xdr:txBody><a:bodyPr vertOverflow="clip" '
    'wrap="square" rtlCol="0" anchor="ctr"/><a:lstStyle/>{paragraphs}</xdr:txBody></xdr:sp>'
    "<xdr:clientData/></xdr:twoCellAnchor>"
)
_PARAGRAPH = ('<a:p><a:pPr algn="ctr"/>{runs}</a:p>')
_RUN = ('<a:r><a:rPr lang="vi-VN" sz="1400" b="1"><a:solidFill><a:srgbClr val="FF0000"/></a:solidFill>'
        '<a:latin typeface="Times New Roman"/></a:rPr><a:t>{text}</a:t></a:r>')


def with_text_boxes(xlsx: bytes, boxes: list[list[list[str]]]) -> bytes:
    """The workbook with text boxes on its first sheet: boxes -> paragraphs -> runs."""
    shapes = "".join(
        _SHAPE.format(col=3 * index + 2, col_to=3 * index + 4, id=index + 2, paragraphs="".join(
            _PARAGRAPH.format(runs="".join(_RUN.format(text=run) for run in paragraph)) for paragraph in box))
        for index, box in enumerate(boxes)
    )
    source = zipfile.ZipFile(io.BytesIO(xlsx))
    assert "xl/worksheets/_rels/sheet1.xml.rels" not in source.namelist(), "sheet already has relationships"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "[Content_Types].xml":
                content = content.replace(b"</Types>", b'<Override PartName="/xl/drawings/drawing1.xml" ContentType='
                                          b'"application/vnd.openxmlformats-officedocument.drawing+xml"/></Types>')
            elif info.filename == "xl/worksheets/sheet1.xml":
                content = re.sub(rb"(<pageMargins[^>]*/>)", rb'\1<drawing r:id="rIdShapes"/>', content, count=1)
                if b'xmlns:r="' not in content[:400]:
                    content = content.replace(
                        b"<worksheet ", b'<worksheet xmlns:r="http://schemas.openxmlformats.org/officeDocument/'
                        b'2006/relationships" ', 1)
            target.writestr(info, content)
        target.writestr("xl/drawings/drawing1.xml", _DRAWING.format(shapes=shapes))
        target.writestr(
            "xl/worksheets/_rels/sheet1.xml.rels",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="rIdShapes" Type="http://schemas.'
            'openxmlformats.org/officeDocument/2006/relationships/drawing" Target="../drawings/drawing1.xml"/>'
            "</Relationships>",
        )
    return buffer.getvalue()
