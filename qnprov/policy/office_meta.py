"""Metadata of Office files: OOXML document properties, ODF meta.xml and xlsx sheet names.

A property is a field of its own, so each becomes its own line: the matcher must see
"Độ mật: Tối mật" in the category, or "TUYỆT MẬT" in the keywords, alone on a line, never
run together with the creator before it ("openpyxlTUYỆT MẬT"). Sheet names (the tabs of a
workbook, "TỐI MẬT") are attributes of xl/workbook.xml, never text, so they are read
separately, one per line (an ODF spreadsheet's, in content.xml, by :mod:`qnprov.policy.office`).

The XML goes through the same lexer as :mod:`qnprov.policy.office` (no DTD, the five
predefined entities, comments and processing instructions removed, linear time).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

from qnprov.policy.markings import xml_may_contain_marking
from qnprov.policy.office import Check, ReadMember, attribute_lines, lex_xml, strip_invisible

# Core (title, subject, creator, keywords, description, category, contentStatus...),
# extended (company, manager, titles of parts) and custom properties.
_CORE_PROPS = "docProps/core.xml"
_APP_PROPS = "docProps/app.xml"
_CUSTOM_PROPS = "docProps/custom.xml"
_WORKBOOK = "xl/workbook.xml"
_ODF_META = "meta.xml"
# <sheet name="..." sheetId="1" r:id="rId1"/>; the pattern never crosses a '<' or '>'.
_SHEET_NAME = re.compile(r'<(?:[\w.-]+:)?sheet\s[^<>]*?\bname="([^"<>]*)"')
_ATTR_NAME = re.compile(r'\b(?:meta:)?name="([^"]*)"')


def _no_check() -> None:
    return None


def element_lines(xml: bytes, check: Check = _no_check) -> str:
    """The text of every element on its own line: each tag, opening or closing, ends a field."""
    lines: list[str] = []
    current: list[str] = []
    for content, match in lex_xml(strip_invisible(xml.decode("utf-8", errors="replace")), check):
        if content is not None:
            current.append(content)
        elif match.group(2) is not None and current:
            lines.append(html.unescape("".join(current)).strip())
            current = []
    if current:
        lines.append(html.unescape("".join(current)).strip())
    return "\n".join(line for line in lines if line)


def named_properties_to_text(xml: bytes, element: str, check: Check = _no_check) -> str:
    """Document-management software stores "Độ mật" as a named property: render "name: value" lines.

    ``element`` is the local name of the property element: ``property`` (docx custom
    properties) or ``user-defined`` (ODF meta.xml).
    """
    text = strip_invisible(xml.decode("utf-8", errors="replace"))
    lines: list[str] = []
    current: str | None = None
    value: list[str] = []
    for content, match in lex_xml(text, check):
        if content is not None:
            if current is not None:
                value.append(content)
            continue
        if match.group(2) != element:
            continue
        if match.group(1):  # closing tag
            if current is not None:
                lines.append(f"{current}: {html.unescape(''.join(value)).strip()}")
            current, value = None, []
        elif not match.group(4):
            attribute = _ATTR_NAME.search(match.group(3))
            current, value = (html.unescape(attribute.group(1)) if attribute else ""), []
    return "\n".join(lines)


def ooxml_meta_segments(names: set[str], read: ReadMember, check: Check = _no_check) -> Iterator[tuple[str, str]]:
    """(part name, text) for the sheet names and the core, extended and custom properties."""
    if _WORKBOOK in names and xml_may_contain_marking(xml := read(_WORKBOOK)):
        yield _WORKBOOK, attribute_lines(xml, _SHEET_NAME)
    for part in (_CORE_PROPS, _APP_PROPS):
        if part in names and xml_may_contain_marking(xml := read(part)):
            yield part, element_lines(xml, check)
    if _CUSTOM_PROPS in names and xml_may_contain_marking(xml := read(_CUSTOM_PROPS)):
        yield _CUSTOM_PROPS, named_properties_to_text(xml, "property", check)


def odf_meta_segments(names: set[str], read: ReadMember, check: Check = _no_check) -> Iterator[tuple[str, str]]:
    """meta.xml: each field (title, subject, every keyword...) on its own line, then the
    user-defined fields as "name: value" lines."""
    if _ODF_META in names and xml_may_contain_marking(meta := read(_ODF_META)):
        yield _ODF_META, element_lines(meta, check) + "\n" + named_properties_to_text(meta, "user-defined", check)
