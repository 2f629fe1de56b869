"""Text of Office documents, read straight from their XML.

Why not python-docx/openpyxl (measured by benchmarks/office_reader.py, figures in
docs/policy.md): on a docx this reader takes about a fifth of python-docx's CPU time
(4-5x faster) and also reads text boxes, which python-docx's API does not return; on an
xlsx it is only about as fast as openpyxl in read-only mode (0.8-1.4x), and the reason is
coverage: read-only openpyxl drops page headers/footers and comments, and neither library
returns the text of drawn shapes, where stamps also appear. One reader also serves
docx, xlsx, pptx and ODF alike, and the mail host needs no python-docx.

The XML is never parsed with a DTD-aware parser: tags are mapped to line and cell breaks
and entities are the five predefined ones, so entity-expansion bombs have nothing to
expand. Paragraphs become lines and table cells become tabs, which is what lets the
marking matcher see a stamp alone in its cell or text box.

Everything here runs in time linear in the input. Hostile XML ("<w:r>" repeated a million
times without a closing tag) would make ``<a>.*?</a>`` patterns quadratic, so blocks are
cut with ``str.find`` and tags are read by one lexer whose patterns never cross a '<'.

size-reason: one concern, Office XML to text; the Word/PowerPoint, Excel and ODF readers share
the lexer and the caps-styling helpers, and a module per reader would have to export those internals.
"""

from __future__ import annotations

import heapq
import html
import re
from collections.abc import Callable, Iterator

from qnprov.policy.markings import xml_may_contain_marking

ReadMember = Callable[[str], bytes]

_WORD_PARTS = re.compile(r"^word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml$")
_EXCEL_STRINGS = "xl/sharedStrings.xml"
_EXCEL_SHEET = re.compile(r"^xl/worksheets/sheet\d+\.xml$")
# Text outside the cells and slides: shapes and text boxes (DrawingML and legacy VML),
# comments (legacy, openpyxl's "xl/comments/commentN.xml", threaded), chart titles and
# labels, and SmartArt text.
_OFFICE_EXTRA = re.compile(
    r"^(?:xl|word|ppt)/(?:drawings/(?:drawing\d+\.xml|vmlDrawing\d+\.vml)|comments\d*\.xml|comments/[^/]+\.xml"
    r"|threadedComments/[^/]+\.xml|charts/chart\d+\.xml|diagrams/data\d+\.xml)$"
)
_SLIDE_PARTS = re.compile(
    r"^ppt/(slides/slide|notesSlides/notesSlide|slideMasters/slideMaster|slideLayouts/slideLayout)\d+\.xml$"
)

# Tag name (without namespace prefix) -> text emitted where that element ends/occurs.
_BREAKS = {
    "p": "\n", "br": "\n", "cr": "\n", "tab": "\t", "tc": "\t", "tr": "\n", "txbxContent": "\n",
    "h": "\n", "table-cell": "\t", "table-row": "\n", "line-break": "\n", "s": " ",
    "si": "\n", "row": "\n", "c": "\t", "oddHeader": "\n", "oddFooter": "\n",
    "evenHeader": "\n", "evenFooter": "\n", "firstHeader": "\n", "firstFooter": "\n",
    "title": "\n", "subject": "\n", "description": "\n", "keywords": "\n", "property": "\n",
    # comments (<text>), chart values (<c:v>), VML text boxes (<v:textbox><div>)
    "text": "\n", "v": "\n", "textbox": "\n", "div": "\n", "author": "\n", "comment": "\n",
    # a shape's anchor numbers (<xdr:from><xdr:col>1</xdr:col>...) end before its text body starts
    "from": "\n", "to": "\n", "bodyPr": "\n",
}
_SELF_CONTAINED = {"tab", "br", "cr", "s", "line-break"}
_CELLS = {"tc", "table-cell"}
# One lexer for all XML here: a tag (never spanning a '<'), or a run of text.
_LEX = re.compile(r"<(/?)(?:[\w.-]+:)?([\w.-]+)([^<>]*?)(/?)>|([^<]+)|<")
# Field codes and markup that carry no visible text; an unclosed block runs to the end.
_INVISIBLE_BLOCKS = (("<w:instrText", "</w:instrText>"), ("<w:delInstrText", "</w:delInstrText>"),
                     ("<?", "?>"), ("<!--", "-->"), ("<!DOCTYPE", ">"))
# Excel header/footer codes (ECMA-376 Part 1, 18.3.1.39): "&&" is a literal ampersand; &L &C &R
# start the left/centre/right sections; &P &N &D &T &Z &F &A &G print a field (page,
# pages, date, time, path, file, sheet, picture); the rest only format the text that
# follows: &"font,style", &nn (size), &K + RRGGBB or theme colour "TTSNNN", &B &I &U &E &S
# &X &Y &O &H. One left-to-right pass, so "&&K..." is "&" then the text "K...".
_EXCEL_HF_CODES = re.compile(r'&(?:(&)|([LCR])|([PNDTZFAG])|"[^"]*"|\d+|K(?:[0-9A-Fa-f]{6}|\d\d[+-]\d{3})|[BIUESXYOH])')


def excel_header_footer_text(value: str) -> str:
    """The text Excel prints for a header/footer value: sections become tab-separated cells,
    fields a space, formatting codes nothing ("&"Arial,Bold"&14&KFF0000TUYỆT MẬT" -> "TUYỆT MẬT")."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "&"
        if match.group(2):
            return "\t"
        if match.group(3):
            return " "
        return ""

    return _EXCEL_HF_CODES.sub(replace, value)


Check = Callable[[], None]


def _no_check() -> None:
    return None


def lex_xml(text: str, check: Check) -> Iterator[tuple[str | None, re.Match[str]]]:
    """The lexer: ``(content, match)`` per token, where ``content`` is the text between tags
    (None for a tag or a stray '<'). It calls ``check`` (the inspection clock) every 65,536
    tokens: a single huge part must not run past the wall-clock budget unnoticed."""
    for count, match in enumerate(_LEX.finditer(text)):
        if not count & 0xFFFF:
            check()
        yield match.group(5), match


def remove_blocks(text: str, start: str, end: str) -> str:
    """Remove every start...end block in one left-to-right pass."""
    if start not in text:
        return text
    out: list[str] = []
    position = 0
    while True:
        found = text.find(start, position)
        if found < 0:
            out.append(text[position:])
            break
        out.append(text[position:found])
        closing = text.find(end, found + len(start))
        if closing < 0:
            break
        position = closing + len(end)
    return "".join(out)


def strip_invisible(text: str) -> str:
    for start, end in _INVISIBLE_BLOCKS:
        text = remove_blocks(text, start, end)
    return text


def xml_to_text(xml: bytes, check: Check = _no_check) -> str:
    text = strip_invisible(xml.decode("utf-8", errors="replace"))
    out: list[str] = []
    open_cells = 0
    for content, match in lex_xml(text, check):
        if content is not None:
            out.append(content)
            continue
        name = match.group(2)
        if name is None:
            continue  # a stray '<'
        closing, self_closing = match.group(1), match.group(4)
        if name in _CELLS and not self_closing:
            open_cells += -1 if closing else 1
        separator = _BREAKS.get(name)
        if separator is None:
            continue
        if separator == "\n" and open_cells > 0 and name in {"p", "h"}:
            # A paragraph inside a table cell: keep the row on one line ("Độ mật" | "Mật").
            separator = "\t"
        # Block ends (closing or self-closing) break; opening tags of a break element don't,
        # except the self-contained ones (tab, br, s, line-break).
        if closing or self_closing or name in _SELF_CONTAINED:
            out.append(separator)
    return html.unescape("".join(out))


_CAPS_ON = re.compile(rb"<w:(?:caps|smallCaps)(?:\s+w:val=\"(?:1|true|on)\")?\s*/>")
_RUN_TEXT = re.compile(rb"(<w:t\b[^<>]*>)([^<]*)(</w:t>)")


MAX_CAPS_STYLES = 16
_STYLE_ID = re.compile(rb'w:styleId="([^"<>]{1,200})"')
_STYLE_REF = re.compile(rb'<w:(?:pStyle|rStyle)\s+w:val="([^"<>]{1,200})"')


def caps_styles(styles_xml: bytes) -> frozenset[bytes]:
    """Ids of styles that render their text in capitals (inheritance via basedOn is not followed).

    Walks the <w:caps/> occurrences (few) rather than every style (hundreds in a Word
    template); each backwards search stops at the previous occurrence, so it stays linear.
    """
    found: set[bytes] = set()
    previous_end = 0
    current_id: bytes | None = None
    for start, end in _caps_spans(styles_xml):
        style_start = styles_xml.rfind(b"<w:style ", previous_end, start)
        if style_start >= 0:
            style_id = _STYLE_ID.search(styles_xml, style_start, start)
            current_id = style_id.group(1) if style_id else None
        if current_id is not None:
            found.add(current_id)
            if len(found) >= MAX_CAPS_STYLES:
                break  # each style costs a scan of the document; real templates have a handful
        previous_end = end
    return frozenset(found)


def _caps_spans(xml: bytes) -> Iterator[tuple[int, int]]:
    """Spans of caps-on elements in order, found lazily with bytes.find (a regex scan would try
    every '<w:'; a list could hold millions of entries on hostile input)."""

    def spans_of(token: bytes) -> Iterator[tuple[int, int]]:
        position = xml.find(token)
        while position >= 0:
            match = _CAPS_ON.match(xml, position)
            if match:
                yield match.span()
            position = xml.find(token, position + len(token))

    return heapq.merge(spans_of(b"<w:caps"), spans_of(b"<w:smallCaps"))


def _upper_texts(fragment: bytes) -> bytes:
    return _RUN_TEXT.sub(
        lambda t: t.group(1) + t.group(2).decode("utf-8", "replace").upper().encode() + t.group(3), fragment
    )


def _displays_caps(fragment: bytes, start: int, styles: frozenset[bytes]) -> bool:
    if _CAPS_ON.search(fragment, start):
        return True
    if styles:
        return any(ref.group(1) in styles for ref in _STYLE_REF.finditer(fragment, start))
    return False


def _apply_caps(xml: bytes, styles: frozenset[bytes] = frozenset()) -> bytes:
    """Text that Word displays in capitals is matched in capitals: a stamp typed "mật" in a
    run formatted <w:caps/>, or in a paragraph/run whose style has caps, prints "MẬT"."""
    # Only styles this part actually names matter (a template defines hundreds).
    styles = frozenset(style for style in styles if b'w:val="' + style + b'"' in xml)
    if b"<w:caps" not in xml and b"<w:smallCaps" not in xml and not styles:
        return xml
    if styles:
        paragraphs = xml.split(b"</w:p>")
        for index, piece in enumerate(paragraphs[:-1]):
            start = max(piece.rfind(b"<w:p>"), piece.rfind(b"<w:p "))
            if start < 0:
                continue
            properties_end = piece.find(b"</w:pPr>", start)
            if properties_end >= 0 and any(
                ref.group(1) in styles for ref in _STYLE_REF.finditer(piece[:properties_end], start)
            ):
                paragraphs[index] = piece[:start] + _upper_texts(piece[start:])
        xml = b"</w:p>".join(paragraphs)
    pieces = xml.split(b"</w:r>")
    for index, piece in enumerate(pieces[:-1]):
        start = max(piece.rfind(b"<w:r>"), piece.rfind(b"<w:r "))
        if start >= 0 and _displays_caps(piece, start, styles):
            pieces[index] = piece[:start] + _upper_texts(piece[start:])
    return b"</w:r>".join(pieces)


def ooxml_segments(archive: object, names: set[str], read: ReadMember,
                   check: Check = _no_check) -> Iterator[tuple[str, str]]:
    """(part name, text) for the parts of a docx/xlsx/pptx that people write text into."""
    ordered = sorted(names)
    styles: frozenset[bytes] | None = None
    for name in ordered:
        if _WORD_PARTS.match(name):
            xml = read(name)
            if xml_may_contain_marking(xml):
                if styles is None:
                    styles = caps_styles(read("word/styles.xml")) if "word/styles.xml" in names else frozenset()
                yield name, xml_to_text(_apply_caps(xml, styles), check)
        elif _SLIDE_PARTS.match(name) or _OFFICE_EXTRA.match(name):
            xml = read(name)
            if xml_may_contain_marking(xml):
                yield name, xml_to_text(xml, check)
    if _EXCEL_STRINGS in names or any(_EXCEL_SHEET.match(n) for n in ordered):
        yield from _excel_segments(ordered, names, read, check)


def _shared_strings(xml: str, check: Check) -> list[str]:
    strings: list[str] = []
    current: list[str] | None = None
    for content, match in lex_xml(xml, check):
        if content is not None:
            if current is not None:
                current.append(content)
            continue
        if match.group(2) == "si":
            if match.group(1):
                strings.append(html.unescape("".join(current or [])))
                current = None
            elif not match.group(4):
                current = []
            else:
                strings.append("")
    return strings


_HEADER_FOOTER = {"oddHeader", "oddFooter", "evenHeader", "evenFooter", "firstHeader", "firstFooter"}


def _sheet_lines(xml: str, shared: list[str], check: Check) -> list[str]:
    """Rows as tab-separated lines; header/footer sections as their own lines."""
    lines: list[str] = []
    row: list[str] = []
    cell_type: str | None = None  # None: not inside a cell
    cell_text: list[str] = []
    capture = False  # inside <v> or <t>
    header: list[str] | None = None
    for content, match in lex_xml(xml, check):
        if content is not None:
            if header is not None:
                header.append(content)
            elif capture:
                cell_text.append(content)
            continue
        name, closing, attrs, self_closing = match.group(2), match.group(1), match.group(3), match.group(4)
        if name == "c":
            if closing or self_closing:
                if cell_type is not None or self_closing:
                    row.append(_cell_value(cell_type or "", "".join(cell_text), shared))
                cell_type, cell_text = None, []
            else:
                kind = re.search(r'\bt="(\w+)"', attrs or "")
                cell_type, cell_text = (kind.group(1) if kind else "n"), []
        elif name in {"v", "t"} and cell_type is not None:
            capture = not closing and not self_closing
        elif name == "row":
            if closing or self_closing:
                lines.append("\t".join(row))
                row = []
            else:
                row = []
        elif name in _HEADER_FOOTER:
            if closing:
                # &L/&C/&R section codes split a header into cells; formatting codes vanish.
                lines.append(excel_header_footer_text(html.unescape("".join(header or []))))
                header = None
            elif not self_closing:
                header = []
    if row:
        lines.append("\t".join(row))
    return lines


def _cell_value(cell_type: str, text: str, shared: list[str]) -> str:
    if cell_type == "s":
        index = int(text) if text.strip().isdigit() else -1
        return shared[index] if 0 <= index < len(shared) else ""
    return html.unescape(text)


def _excel_segments(ordered: list[str], names: set[str], read: ReadMember,
                    check: Check) -> Iterator[tuple[str, str]]:
    """Rows of cells as tab-separated lines, so "Độ mật" | "Mật" in adjacent cells reads as one line."""
    shared: list[str] = []
    shared_may_mark = False
    if _EXCEL_STRINGS in names:
        raw_shared = read(_EXCEL_STRINGS)
        shared_may_mark = xml_may_contain_marking(raw_shared)
        if shared_may_mark:
            shared = _shared_strings(strip_invisible(raw_shared.decode("utf-8", errors="replace")), check)
    for name in ordered:
        if _EXCEL_SHEET.match(name):
            raw_sheet = read(name)
            # Cells only point into the shared strings; without a possible marking in either, skip.
            if shared_may_mark or xml_may_contain_marking(raw_sheet):
                xml = strip_invisible(raw_sheet.decode("utf-8", errors="replace"))
                yield name, "\n".join(_sheet_lines(xml, shared, check))


_ODF_UPPER_STYLE = re.compile(
    rb'<style:style\b[^<>]*style:name="([^"<>]{1,200})"[^<>]*>\s{0,64}<style:text-properties\b[^<>]*'
    rb'fo:text-transform="uppercase"'
)
_ODF_STYLED_TEXT = re.compile(rb'(<text:(?:span|p|h)\b[^<>]*text:style-name="([^"<>]{1,200})"[^<>]*>)([^<]*)')


_ODF_TABLE_NAME = re.compile(r'<table:table\s[^<>]*?\btable:name="([^"<>]*)"')


def attribute_lines(xml: bytes, pattern: re.Pattern[str]) -> str:
    """The attribute values ``pattern`` captures (comments and the like removed), each a line
    ending in a newline: sheet names of a workbook or an ODF spreadsheet."""
    text = strip_invisible(xml.decode("utf-8", errors="replace"))
    return "".join(html.unescape(match.group(1)) + "\n" for match in pattern.finditer(text))


def _odf_apply_uppercase(xml: bytes, styles: frozenset[bytes]) -> bytes:
    """Text directly inside a span/paragraph whose style is fo:text-transform="uppercase"."""
    if not styles:
        return xml
    return _ODF_STYLED_TEXT.sub(
        lambda m: m.group(1) + (m.group(3).decode("utf-8", "replace").upper().encode()
                                if m.group(2) in styles else m.group(3)),
        xml,
    )


def odf_segments(names: set[str], read: ReadMember, check: Check = _no_check) -> Iterator[tuple[str, str]]:
    """content.xml (body, tables, frames), styles.xml (page headers/footers); meta.xml is
    :func:`qnprov.policy.office_meta.odf_meta_segments`."""
    parts = {name: read(name) for name in ("content.xml", "styles.xml") if name in names}
    upper_styles = frozenset(
        match.group(1) for xml in parts.values() if b"uppercase" in xml for match in _ODF_UPPER_STYLE.finditer(xml)
    )
    for name, xml in parts.items():
        if xml_may_contain_marking(xml):
            # A spreadsheet's sheet names (its tabs) are attributes: one line each, before the cells.
            tables = attribute_lines(xml, _ODF_TABLE_NAME) if name == "content.xml" else ""
            yield name, tables + xml_to_text(_odf_apply_uppercase(xml, upper_styles), check)
