"""Builders for the policy test corpus: every fixture is generated, nothing binary is committed.

Each builder returns bytes; ``message()`` wraps bodies and attachments into a MIME
message with the requested charset and transfer encoding.
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
import zlib
from email import encoders
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from pathlib import Path

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

SENDER = "chuyenvien@quangninh.gov.vn"
RECIPIENT = "vanthu@quangninh.gov.vn"

Attachment = tuple[str, str, bytes]  # (file name, MIME type, content)


def message(
    subject: str = "V/v báo cáo tháng",
    body: str = "Kính gửi anh chị,\nGửi kèm báo cáo.\n",
    *,
    attachments: list[Attachment] | None = None,
    html: str | None = None,
    charset: str = "utf-8",
    body_cte: str | None = None,
    sender: str = SENDER,
    to: str = RECIPIENT,
    extra_headers: dict[str, str] | None = None,
    raw_body_bytes: bytes | None = None,
) -> bytes:
    """A complete message; ``body_cte`` picks base64/quoted-printable/8bit for the text part."""
    text = MIMEText("", "plain", charset)
    payload = raw_body_bytes if raw_body_bytes is not None else body.encode(charset)
    _set_payload(text, payload, body_cte or "base64", "text/plain", charset)
    parts: list[MIMEBase] = [text]
    if html is not None:
        html_part = MIMEText("", "html", charset)
        _set_payload(html_part, html.encode(charset), body_cte or "quoted-printable", "text/html", charset)
        alternative = MIMEMultipart("alternative")
        alternative.attach(text)
        alternative.attach(html_part)
        parts = [alternative]
    if attachments:
        root: MIMEBase = MIMEMultipart("mixed")
        for part in parts:
            root.attach(part)
        for name, ctype, data in attachments:
            root.attach(attachment_part(name, ctype, data))
    else:
        root = parts[0]
    root["From"] = sender
    root["To"] = to
    root["Subject"] = Header(subject, "utf-8").encode() if not subject.isascii() else subject
    root["Message-ID"] = "<test@quangninh.gov.vn>"
    for name, value in (extra_headers or {}).items():
        root[name] = value
    return root.as_bytes()


def _set_payload(part: MIMEBase, payload: bytes, cte: str, ctype: str, charset: str) -> None:
    del part["Content-Transfer-Encoding"]
    part.set_payload(payload)
    if cte == "base64":
        encoders.encode_base64(part)
    elif cte == "quoted-printable":
        encoders.encode_quopri(part)
    else:
        part["Content-Transfer-Encoding"] = "8bit"
        # Raw 8-bit bytes survive the compat32 generator as surrogate escapes.
        part.set_payload(payload.decode("ascii", errors="surrogateescape"))


def attachment_part(name: str, ctype: str, data: bytes) -> MIMEBase:
    if ctype == "message/rfc822":
        inner = BytesParser().parsebytes(data)
        part: MIMEBase = MIMEMessage(inner)
    else:
        maintype, _, subtype = ctype.partition("/")
        part = MIMEApplication(data, subtype) if maintype == "application" else MIMEBase(maintype, subtype)
        if maintype != "application":
            part.set_payload(data)
            encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=name)
    return part


# -- Office documents ---------------------------------------------------------------------

_TEXTBOX_XML = (
    '<w:p xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:r><mc:AlternateContent>'
    "<mc:Choice Requires=\"wps\"><w:drawing><wps:wsp><wps:txbx><w:txbxContent>"
    "<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"
    "</w:txbxContent></wps:txbx></wps:wsp></w:drawing></mc:Choice></mc:AlternateContent></w:r></w:p>"
)


def docx(
    body: str = "Báo cáo tình hình thực hiện nhiệm vụ.",
    *,
    header: str | None = None,
    footer: str | None = None,
    table: list[list[str]] | None = None,
    textbox: str | None = None,
) -> bytes:
    import docx as python_docx
    from docx.oxml import parse_xml

    document = python_docx.Document()
    section = document.sections[0]
    if header is not None:
        section.header.paragraphs[0].text = header
    if footer is not None:
        section.footer.paragraphs[0].text = footer
    for line in body.split("\n"):
        document.add_paragraph(line)
    if table is not None:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row_index, row in enumerate(table):
            for col_index, value in enumerate(row):
                grid.cell(row_index, col_index).text = value
    if textbox is not None:
        document.element.body.append(parse_xml(_TEXTBOX_XML.format(text=textbox)))
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def xlsx(rows: list[list[str]], *, header: str | None = None) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    if header is not None:
        sheet.oddHeader.center.text = header
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _zip(entries: dict[str, str | bytes], *, stored_first: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if stored_first is not None:
            archive.writestr(zipfile.ZipInfo(stored_first), entries[stored_first], compress_type=zipfile.ZIP_STORED)
        for name, content in entries.items():
            if name != stored_first:
                archive.writestr(name, content)
    return buffer.getvalue()


def pptx(slide_paragraphs: list[str]) -> bytes:
    paragraphs = "".join(f"<a:p><a:r><a:t>{text}</a:t></a:r></a:p>" for text in slide_paragraphs)
    slide = (
        '<?xml version="1.0" encoding="UTF-8"?><p:sld xmlns:p="http://schemas.openxmlformats.org/presentationml/'
        '2006/main" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><p:cSld><p:spTree><p:sp>'
        f"<p:txBody>{paragraphs}</p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
    )
    return _zip({
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                               '2006/content-types"><Override PartName="/ppt/slides/slide1.xml" ContentType='
                               '"application/vnd.openxmlformats-officedocument.presentationml.slide+xml"/></Types>',
        "ppt/slides/slide1.xml": slide,
    })


def odt(paragraphs: list[str], *, header: str | None = None, table: list[list[str]] | None = None,
        uppercase_span: str | None = None) -> bytes:
    body = "".join(f"<text:p>{text}</text:p>" for text in paragraphs)
    automatic = ""
    if uppercase_span is not None:
        automatic = ('<office:automatic-styles><style:style style:name="T1" style:family="text">'
                     '<style:text-properties fo:text-transform="uppercase"/></style:style></office:automatic-styles>')
        body += f'<text:p><text:span text:style-name="T1">{uppercase_span}</text:span></text:p>'
    if table:
        rows = "".join(
            "<table:table-row>" + "".join(
                f"<table:table-cell><text:p>{cell}</text:p></table:table-cell>" for cell in row
            ) + "</table:table-row>" for row in table
        )
        body += f"<table:table>{rows}</table:table>"
    namespaces = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
                  'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
                  'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
                  'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
                  'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"')
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {namespaces}>'
               f"{automatic}<office:body><office:text>{body}</office:text></office:body></office:document-content>")
    styles_header = f"<style:header><text:p>{header}</text:p></style:header>" if header else ""
    styles = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-styles {namespaces}>'
              f"<office:master-styles><style:master-page>{styles_header}</style:master-page>"
              "</office:master-styles></office:document-styles>")
    return _zip({"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content,
                 "styles.xml": styles}, stored_first="mimetype")


def zip_of(entries: dict[str, bytes]) -> bytes:
    return _zip(dict(entries))


def nested_zip(inner_name: str, inner: bytes, levels: int) -> bytes:
    data, name = inner, inner_name
    for level in range(levels):
        data = _zip({name: data})
        name = f"level{level}.zip"
    return data


# -- PDF -------------------------------------------------------------------------------------


def pdf(lines: list[str], *, encrypt: bool = False, text_layer: bool = True) -> bytes:
    import pymupdf

    document = pymupdf.open()
    page = document.new_page()
    if text_layer:
        y = 72.0
        for line in lines:
            page.insert_text((72, y), line, fontsize=12, fontname="dejavu", fontfile=str(FONT))
            y += 18
    else:
        # A "scan": only vector drawing and an image, no text objects.
        page.draw_rect(pymupdf.Rect(72, 72, 300, 120), color=(1, 0, 0), width=2)
        pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 40, 20), False)
        pixmap.clear_with(200)
        page.insert_image(pymupdf.Rect(72, 140, 272, 240), pixmap=pixmap)
    if text_layer and lines:
        document.subset_fonts()  # as word processors do; a full embedded font is ~750 KB
    options: dict[str, object] = {"garbage": 3, "deflate": True}
    if encrypt:
        aes_256 = pymupdf.PDF_ENCRYPT_AES_256  # type: ignore[attr-defined]
        options.update(encryption=aes_256, user_pw="secret", owner_pw="owner")
    data = document.tobytes(**options)
    document.close()
    return bytes(data)


def encrypted_zip(name: str, content: bytes) -> bytes:
    """A zip whose entry carries the 'encrypted' flag (bit 0), patched in by hand.

    zipfile cannot write encrypted entries, so the flag is set in the local and central
    headers of a stored entry prefixed with a 12-byte ZipCrypto header. The inspector must
    refuse on the flag alone, before trying to read anything.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(name), bytes(12) + content)
    data = bytearray(buffer.getvalue())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def to_cp1258(text: str) -> bytes:
    """windows-1258 as Vietnamese Windows writes it: base vowels precomposed, tone marks combining."""
    out = bytearray()
    for char in text:
        try:
            out += char.encode("cp1258")
            continue
        except UnicodeEncodeError:
            pass
        decomposed = unicodedata.normalize("NFD", char)
        base, marks = decomposed[0], decomposed[1:]
        # Try to keep a circumflex/breve/horn on the base letter; the tone mark stays combining.
        for index in range(len(marks)):
            candidate = unicodedata.normalize("NFC", base + marks[index])
            rest = marks[:index] + marks[index + 1:]
            try:
                out += candidate.encode("cp1258") + rest.encode("cp1258")
                break
            except UnicodeEncodeError:
                continue
        else:
            out += decomposed.encode("cp1258")
    return bytes(out)


def zip_bomb(expanded_mib: int = 1024, name: str = "zeros.bin") -> bytes:
    """One deflated entry of ``expanded_mib`` MiB of zeros (1 GiB -> about 1 MiB), built fast.

    Each MiB is deflated once with a full flush, so the compressed block is byte-aligned and
    independent; the stream is that block repeated, then a final block. The zip headers are
    written by hand (sizes stay under 4 GiB, so no zip64 is needed).
    """
    import struct

    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    closer = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = closer.compress(chunk) + closer.flush(zlib.Z_FINISH)
    stream = block * (expanded_mib - 1) + final
    crc = 0
    for _ in range(expanded_mib):
        crc = zlib.crc32(chunk, crc)
    size = expanded_mib << 20
    encoded = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(encoded), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), size,
                          len(encoded), 0, 0, 0, 0, 0, 0)
    central_offset = len(local) + len(encoded) + len(stream)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), central_offset, 0)
    return local + encoded + stream + central + encoded + end


def with_zip_entry(data: bytes, name: str, content: str | bytes) -> bytes:
    """Copy of a zip (docx/odt...) with one more entry."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        target.writestr(name, content)
    return buffer.getvalue()


def docx_runs(runs: list[tuple[str, bool]]) -> bytes:
    """A docx whose single paragraph is split into runs; True marks a run formatted <w:caps/>."""
    import docx as python_docx

    document = python_docx.Document()
    paragraph = document.add_paragraph()
    for text, caps in runs:
        run = paragraph.add_run(text)
        if caps:
            run.font.all_caps = True
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def docx_caps_style(text: str, *, on_run: bool = False) -> bytes:
    """A docx whose text is typed in lower case but shown in capitals by a style."""
    import docx as python_docx
    from docx.enum.style import WD_STYLE_TYPE

    document = python_docx.Document()
    kind = WD_STYLE_TYPE.CHARACTER if on_run else WD_STYLE_TYPE.PARAGRAPH
    style = document.styles.add_style("DauDoMat", kind)
    style.font.all_caps = True
    if on_run:
        document.add_paragraph().add_run(text, style="DauDoMat")
    else:
        document.add_paragraph(text, style="DauDoMat")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
