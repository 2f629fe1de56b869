"""Turn a message into text segments to inspect, within hard limits.

Everything here treats its input as hostile. Each step checks a shared ``Budget``
(bytes expanded, members, depth, wall time); crossing a limit stops that branch and
records a ``Problem`` that the engine turns into a "cannot inspect" finding, so nothing
a blocking rule could not read is accepted silently.
"""

from __future__ import annotations

import binascii
import email
import email.parser
import email.policy
import html
import io
import re
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import Header
from email.message import Message
from typing import Literal

from qnprov.policy.archives import compression_of, inspect_compressed, inspect_tar, looks_like_tar
from qnprov.policy.markings import may_contain_marking, normalise_text
from qnprov.policy.models import Limits

ProblemKind = Literal["uninspectable", "no-text-layer"]


@dataclass(frozen=True)
class Segment:
    location: str
    text: str


@dataclass(frozen=True)
class Problem:
    location: str
    kind: ProblemKind
    reason: str


@dataclass(frozen=True)
class SignedObject:
    """Something that carries a signature, kept as the original bytes."""

    location: str
    kind: Literal["smime", "p7s", "pdf"]
    data: bytes
    content: bytes | None = None  # detached content of a .p7s, when found


@dataclass
class Extraction:
    segments: list[Segment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    signed: list[SignedObject] = field(default_factory=list)


def add_segment(out: Extraction, location: str, text: str) -> None:
    """Keep text for the marking matcher, unless it cannot possibly hold a marking.

    Every marking form contains "mật", whose "ậ" is U+1EAC/U+1EAD composed or carries
    U+0323 (dot below) when decomposed; HTML/XML may spell it as a character reference.
    Text with none of these skips normalisation entirely: the fast path for clean mail.
    """
    if may_contain_marking(text):
        out.segments.append(Segment(location, normalise_text(text)))


class LimitExceeded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_wall_seconds
        self.expanded = 0
        self.parts = 0
        self.files = 0  # archive entries seen, across every nested archive

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"inspection took longer than {self.limits.max_wall_seconds:g} s")

    def spend(self, nbytes: int) -> None:
        self.expanded += nbytes
        if self.expanded > self.limits.max_total_expanded_bytes:
            raise LimitExceeded(f"expanded content exceeds {self.limits.max_total_expanded_bytes} bytes")
        self.check_time()


# -- message level -----------------------------------------------------------------

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_UNSUPPORTED_ARCHIVES = {
    b"Rar!\x1a\x07": "RAR archive",
    b"7z\xbc\xaf\x27\x1c": "7-Zip archive",
    b"\x28\xb5\x2f\xfd": "zstd-compressed data",
    b"LZIP": "lzip-compressed data",
    b"MSCF\x00\x00\x00\x00": "Microsoft Cabinet archive",
    b"\x1f\x9d": "Unix compress (.Z) data",
}
_TEXT_TYPES = {"text/plain", "text/html", "text/xml", "application/xml", "text/csv", "text/enriched"}
_SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
_SMIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}


def parse_message(raw: bytes) -> Message:
    """A full stdlib parse (compat32 never raises on defects); used outside the hot path."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


# -- fast MIME splitting ---------------------------------------------------------------
#
# The stdlib feed parser reads bodies line by line: about 45 ms for a 1 MB attachment.
# The engine only needs headers as Message objects; bodies are sliced out of the raw bytes
# by boundary search (bytes.find) and decoded with binascii, which keeps parsing cost near
# the cost of reading the bytes, and gives the exact original bytes of every entity (what
# signature verification needs).

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class Entity:
    headers: Message  # headers only (the body is not parsed here)
    raw: bytes  # the whole entity, exactly as received
    body: bytes  # still transfer-encoded


def split_entity(raw: bytes) -> Entity:
    """Headers parsed, body kept as bytes. Never raises."""
    if raw.startswith((b"\r\n", b"\n")):
        return Entity(_HEADER_PARSER.parsebytes(b""), raw, raw[2 if raw.startswith(b"\r\n") else 1:])
    limit = min(len(raw), _MAX_HEADER_BYTES)
    # The header block ends at the first "\n\n" or "\n\r\n", whichever comes first.
    # Mail is CRLF, so look for "\n\r\n" first and for "\n\n" only in front of it:
    # searching for "\n\n" first scanned the whole (up to 1 MB) prefix of every CRLF
    # message in vain. A "\n\n" that starts at crlf_cut + 2 ("\n\r\n\n") ends after it,
    # so the second search reaches crlf_cut + 4 (never past limit): the same cut as before.
    crlf_cut = raw.find(b"\n\r\n", 0, limit)
    cut = raw.find(b"\n\n", 0, min(crlf_cut + 4, limit) if crlf_cut >= 0 else limit)
    if crlf_cut >= 0 and cut >= 0 and crlf_cut + 3 > cut:
        crlf_cut = -1  # the "\n\n" is the earlier end (the old code searched crlf only before it)
    if crlf_cut >= 0:
        header_bytes, body = raw[:crlf_cut + 1], raw[crlf_cut + 3:]
    elif cut >= 0:
        header_bytes, body = raw[:cut + 1], raw[cut + 2:]
    else:
        header_bytes, body = raw[:limit], raw[limit:]
    return Entity(_HEADER_PARSER.parsebytes(header_bytes), raw, body)


def split_multipart(body: bytes, boundary: str) -> list[bytes] | None:
    """Raw parts between '--boundary' delimiter lines (RFC 2046 §5.1.1); None when there are none."""
    try:
        delimiter = b"--" + boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    parts: list[bytes] = []
    position = 0
    part_start: int | None = None
    while True:
        found = body.find(delimiter, position)
        if found < 0:
            break
        after = found + len(delimiter)
        position = after
        if found > 0 and body[found - 1:found] != b"\n":
            continue  # "--boundary" inside a line is content
        closing = body[after:after + 2] == b"--"
        line_end = body.find(b"\n", after)
        line_end = len(body) if line_end < 0 else line_end
        rest = body[after + (2 if closing else 0):line_end].rstrip(b"\r")
        if rest.strip(b" \t"):
            continue  # a longer boundary that merely starts with ours
        if part_start is not None:
            end = found - 1 if found > 0 else 0
            if end > part_start and body[end - 1:end] == b"\r":
                end -= 1
            parts.append(body[part_start:max(end, part_start)])
        if closing:
            return parts
        part_start = line_end + 1
        position = part_start
    if part_start is None:
        return None
    parts.append(body[part_start:])  # no closing delimiter: the last part runs to the end
    return parts


_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def decode_body(headers: Message, body: bytes) -> bytes:
    encoding = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            cleaned = _BASE64_JUNK.sub(b"", body)
            return binascii.a2b_base64(cleaned[: len(cleaned) // 4 * 4])
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def decode_header_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Header):
        # compat32 wraps raw 8-bit header bytes in a Header of "unknown-8bit" chunks.
        return "".join(
            _decode_bytes(chunk.encode("utf-8", "surrogateescape"), None) if "unknown" in str(charset)
            else chunk for chunk, charset in getattr(value, "_chunks", [])
        )
    text = str(value)
    if "=?" in text:
        text = _decode_encoded_words(text)
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        # 8-bit header bytes kept by the parser as surrogates: assume UTF-8, then cp1258.
        text = _decode_bytes(text.encode("utf-8", "surrogateescape"), None)
    return text


# RFC 2047 encoded-word. No part may contain '?' or white space, which keeps every match
# attempt short: the stdlib's own pattern (".*?") is quadratic on "=?a?b?" floods.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]{1,64})(?:\*[^?\s]{0,16})?\?([bBqQ])\?([^?\s]*)\?=")


def _decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 words. Adjacent words of one charset are joined before decoding (a
    multi-byte character may be split across them); white space between words is dropped."""
    out: list[str] = []
    pending = b""
    pending_charset = ""
    after_word = False
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position:match.start()]
        position = match.end()
        charset, encoding, payload = match.group(1).lower(), match.group(2).lower(), match.group(3)
        try:
            if encoding == "b":
                data = binascii.a2b_base64(payload + "=" * (-len(payload) % 4))
            else:
                data = binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
        except (binascii.Error, ValueError):
            data = None
        joins = after_word and not between.strip()
        if data is None or not joins or charset != pending_charset:
            if pending:
                out.append(_decode_bytes(pending, pending_charset))
            pending = b""
            if not joins:
                out.append(between)
        if data is None:
            out.append(match.group(0))  # undecodable: keep the raw word for inspection
            after_word = False
            continue
        pending += data
        pending_charset = charset
        after_word = True
    if pending:
        out.append(_decode_bytes(pending, pending_charset))
    out.append(text[position:])
    return "".join(out)


def extract(entity: Entity, limits: Limits) -> Extraction:
    """Segments, problems and signed objects of a whole message."""
    out = Extraction()
    budget = Budget(limits)
    try:
        _walk_message(entity, "", 0, budget, out)
    except LimitExceeded as exc:
        out.problems.append(Problem("message", "uninspectable", exc.reason))
    except RecursionError:
        out.problems.append(Problem("message", "uninspectable", "structure nested too deeply"))
    return out


def _walk_message(entity: Entity, prefix: str, depth: int, budget: Budget, out: Extraction) -> None:
    headers = entity.headers
    subject = decode_header_value(headers.get("Subject"))
    if subject:
        add_segment(out, f"{prefix}subject" if prefix else "subject", subject)
    _walk_part(entity, prefix, depth, budget, out)


def _smime_is_signed(headers: Message) -> bool:
    smime_type = headers.get_param("smime-type") or ""
    return str(smime_type).lower() in {"signed-data", ""}


def _walk_part(entity: Entity, prefix: str, depth: int, budget: Budget, out: Extraction,
               siblings: dict[str, bytes] | None = None) -> None:
    budget.parts += 1
    if budget.parts > budget.limits.max_mime_parts:
        raise LimitExceeded(f"more than {budget.limits.max_mime_parts} MIME parts")
    if depth > budget.limits.max_depth:
        raise LimitExceeded(f"nesting deeper than {budget.limits.max_depth} levels")
    budget.check_time()
    part = entity.headers
    ctype = part.get_content_type()
    if ctype == "multipart/signed" or (ctype in _SMIME_TYPES and _smime_is_signed(part)):
        out.signed.append(SignedObject(prefix.rstrip("/") or "message", "smime", entity.raw))
    if ctype.startswith("multipart/"):
        boundary = part.get_boundary()
        raw_children = split_multipart(entity.body, boundary) if boundary else None
        if raw_children is not None:
            if ctype == "multipart/signed":
                # The second child is the signature over the first, recorded with the
                # multipart/signed entity above; only the signed content is walked.
                raw_children = raw_children[:1]
            named: dict[str, bytes] = {}
            for raw_child in raw_children:
                _walk_part(split_entity(raw_child), prefix, depth + 1, budget, out, named)
            _pair_detached_signatures(named, out)
            return
        # No usable boundary: inspect the body as one opaque leaf rather than skip it.
    if ctype == "message/rfc822":
        name = _part_name(part, "message.eml")
        location = f"{prefix}attachment:{name}" if not prefix else f"{prefix}{name}"
        inner = decode_body(part, entity.body)
        budget.spend(len(inner))
        _walk_message(split_entity(inner), location + "/", depth + 1, budget, out)
        return
    filename = part.get_filename()
    data = decode_body(part, entity.body)
    budget.spend(len(data))
    disposition = str(part.get("Content-Disposition", "")).strip().lower()
    inline_text = filename is None and not disposition.startswith("attachment")
    if inline_text and ctype in {"text/plain", "text/html"} and not _looks_binary(data):
        text = _decode_bytes(data, part.get_content_charset())
        if ctype == "text/html" and may_contain_marking(text):
            text = html_to_text(text)
        add_segment(out, f"{prefix}body" if prefix else "body", text)
        return
    if ctype in _SMIME_TYPES:
        _inspect_opaque_smime(part, data, prefix, depth, budget, out)
        return
    name = (filename and decode_header_value(filename)) or _default_name(ctype)
    if siblings is not None and filename:
        siblings[name] = data
    location = f"{prefix}attachment:{name}" if not prefix else f"{prefix}{name}"
    if ctype in _SIGNATURE_TYPES or (name.lower().endswith((".p7s", ".p7m")) and ctype not in _SMIME_TYPES):
        out.signed.append(SignedObject(location, "p7s", data))
        return
    inspect_file(name, data, location, depth + 1, budget, out, declared_type=ctype,
                 charset=part.get_content_charset())


def _inspect_opaque_smime(part: Message, data: bytes, prefix: str, depth: int, budget: Budget,
                          out: Extraction) -> None:
    """application/pkcs7-mime: signed-data carries the MIME entity inside; enveloped-data is encrypted."""
    location = f"{prefix}attachment:{_part_name(part, 'smime.p7m')}" if not prefix else f"{prefix}smime.p7m"
    smime_type = str(part.get_param("smime-type") or "").lower()
    if smime_type not in {"", "signed-data"}:
        out.problems.append(Problem(location, "uninspectable", f"S/MIME {smime_type or 'content'} is encrypted"))
        return
    try:
        from asn1crypto import cms

        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            out.problems.append(Problem(location, "uninspectable", "S/MIME content is encrypted"))
            return
        inner = info["content"]["encap_content_info"]["content"].native
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on garbage
        out.problems.append(Problem(location, "uninspectable", f"malformed S/MIME structure ({type(exc).__name__})"))
        return
    if not isinstance(inner, bytes):
        return
    budget.spend(len(inner))
    _walk_message(split_entity(inner), location + "/", depth + 1, budget, out)


def _pair_detached_signatures(named: dict[str, bytes], out: Extraction) -> None:
    """A detached 'x.pdf.p7s' signs the sibling 'x.pdf': attach that content."""
    for index, signed in enumerate(out.signed):
        if signed.kind != "p7s" or signed.content is not None:
            continue
        base = signed.location.rsplit("/", 1)[-1].removeprefix("attachment:")
        stem = base[:-4] if base.lower().endswith((".p7s", ".p7m")) else base
        if stem in named:
            out.signed[index] = SignedObject(signed.location, "p7s", signed.data, named[stem])


def _part_name(part: Message, default: str) -> str:
    name = part.get_filename()
    return decode_header_value(name) if name else default


def _default_name(ctype: str) -> str:
    return {"text/plain": "text.txt", "text/html": "text.html", "application/pdf": "document.pdf"}.get(
        ctype, "unnamed"
    )


def _looks_binary(data: bytes) -> bool:
    head = data[:4096]
    return b"\x00" in head or head.startswith((b"PK\x03\x04", b"%PDF-", _OLE_MAGIC))


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Vietnamese legacy mail without a usable charset is most often windows-1258.
    return data.decode("cp1258", errors="replace")


# Tag patterns never cross a '<', so a flood of unclosed tags stays linear.
_BLOCK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|/table|p|div|tr|li|h[1-6])\b[^<>]*>", re.IGNORECASE)
_CELL_TAGS = re.compile(r"<\s*/?\s*t[dh]\b[^<>]*>", re.IGNORECASE)
_DROP_START = re.compile(r"<(script|style)\b", re.IGNORECASE)
_DROP_END = re.compile(r"</(?:script|style)\s*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^<>]*>")


def _drop_scripts(markup: str) -> str:
    """Remove <script>/<style> blocks in one pass (an unclosed block runs to the end)."""
    out: list[str] = []
    position = 0
    while True:
        start = _DROP_START.search(markup, position)
        if start is None:
            out.append(markup[position:])
            return "".join(out)
        out.append(markup[position:start.start()])
        end = _DROP_END.search(markup, start.end())
        if end is None:
            return "".join(out)
        position = end.end()


# Text right after a tag styled "text-transform: uppercase" is displayed in capitals.
_UPPERCASE_STYLED = re.compile(r"(<[a-zA-Z][^<>]*text-transform\s*:\s*uppercase[^<>]*>)([^<]*)", re.IGNORECASE)


def html_to_text(markup: str) -> str:
    """Visible text of HTML with line and cell breaks kept (stamps are matched per cell)."""
    markup = _drop_scripts(markup)
    if "text-transform" in markup:
        markup = _UPPERCASE_STYLED.sub(lambda m: m.group(1) + html.unescape(m.group(2)).upper(), markup)
    markup = _BLOCK_TAGS.sub("\n", markup)
    markup = _CELL_TAGS.sub("\t", markup)
    return html.unescape(_ANY_TAG.sub("", markup))


# -- files -------------------------------------------------------------------------


def inspect_file(name: str, data: bytes, location: str, depth: int, budget: Budget, out: Extraction, *,
                 declared_type: str = "application/octet-stream", charset: str | None = None) -> None:
    """Sniff ``data`` by content (never trust the name or MIME type) and extract its text."""
    if depth > budget.limits.max_depth:
        out.problems.append(Problem(location, "uninspectable",
                                    f"nesting deeper than {budget.limits.max_depth} levels"))
        return
    budget.check_time()
    head = data[:1024]
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        _inspect_zip(name, data, location, depth, budget, out)
    elif b"%PDF-" in head:
        from qnprov.policy.pdf import inspect_pdf

        inspect_pdf(data, location, budget, out)
    elif head.startswith(_OLE_MAGIC):
        _inspect_ole(data, location, budget, out)
    elif (compression := compression_of(head)) is not None:
        inspect_compressed(compression, name, data, location, depth, budget, out, _recurse(budget, out))
    elif looks_like_tar(data):
        inspect_tar(data, location, depth, budget, out, _recurse(budget, out))
    elif any(head.startswith(magic) for magic in _UNSUPPORTED_ARCHIVES):
        kind = next(label for magic, label in _UNSUPPORTED_ARCHIVES.items() if head.startswith(magic))
        out.problems.append(Problem(location, "uninspectable", f"{kind} cannot be opened by the inspector"))
    elif _looks_like_message(head):
        _walk_message(split_entity(data), location + "/", depth, budget, out)
    elif head.startswith(b"{\\rtf"):
        from qnprov.policy.legacy import legacy_font_readings

        text = rtf_to_text(data)  # old RTF is often in .VnTime or VNI-Times fonts
        add_segment(out, location, "\n".join([text, *legacy_font_readings(text)]))
    elif not _looks_binary(data) and _is_mostly_text(head):
        text = _decode_bytes(data, charset)
        looks_html = declared_type == "text/html" or name.lower().endswith((".htm", ".html")) or \
            head.lstrip()[:5].lower() in {b"<html", b"<!doc"}
        if looks_html and may_contain_marking(text):
            text = html_to_text(text)
        add_segment(out, location, text)
    # Anything else (images, audio, unknown binaries) carries no text we can read.


_MESSAGE_HEADER = re.compile(rb"^(?:From|Received|Return-Path|MIME-Version|Message-ID|Date|Subject|To):", re.I)


def _looks_like_message(head: bytes) -> bool:
    lines = head.split(b"\n", 3)[:3]
    return sum(1 for line in lines if _MESSAGE_HEADER.match(line)) >= 2


def _is_mostly_text(head: bytes) -> bool:
    if not head:
        return False
    controls = sum(1 for byte in head if byte < 9 or 13 < byte < 32)
    return controls * 20 < len(head)


def _recurse(budget: Budget, out: Extraction) -> Callable[[str, bytes, str, int], None]:
    def inspect(name: str, data: bytes, location: str, depth: int) -> None:
        inspect_file(name, data, location, depth, budget, out)

    return inspect


# -- zip family: OOXML, ODF, plain archives -------------------------------------------


def declared_zip_entries(data: bytes) -> int | None:
    """Entry count from the end-of-central-directory record, read before zipfile builds one
    object per entry (a central directory of a million entries is itself a bomb)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if end < 0 or end + 22 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, end + 10)
    if count != 0xFFFF:
        return int(count)
    locator = data.rfind(b"PK\x06\x07", max(0, end - 20), end)
    if locator < 0 or locator + 20 > len(data):
        return None
    (record,) = struct.unpack_from("<Q", data, locator + 8)
    if record + 40 > len(data) or data[record:record + 4] != b"PK\x06\x06":
        return None
    (count64,) = struct.unpack_from("<Q", data, record + 32)
    return int(count64)


def _inspect_zip(name: str, data: bytes, location: str, depth: int, budget: Budget, out: Extraction) -> None:
    declared = declared_zip_entries(data)
    if declared is not None and declared > budget.limits.max_archive_members:
        out.problems.append(Problem(location, "uninspectable",
                                    f"archive declares {declared} entries (limit {budget.limits.max_archive_members})"))
        return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        out.problems.append(Problem(location, "uninspectable", f"unreadable zip archive ({exc})"))
        return
    limits = budget.limits
    if len(members) > limits.max_archive_members:
        out.problems.append(Problem(location, "uninspectable",
                                    f"archive has {len(members)} entries (limit {limits.max_archive_members})"))
        return
    if any(member.flag_bits & 0x1 for member in members):
        out.problems.append(Problem(location, "uninspectable", "encrypted archive cannot be inspected"))
        return
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > limits.max_member_bytes or ratio > limits.max_expansion_ratio:
            out.problems.append(Problem(
                f"{location}/{member.filename}", "uninspectable",
                f"entry expands to {member.file_size} bytes (ratio {ratio:.0f}:1), over the limits",
            ))
            return
    budget.files += len(members)
    if budget.files > limits.max_total_files:
        raise LimitExceeded(f"more than {limits.max_total_files} files in archives")
    names = {member.filename for member in members}
    try:
        if "[Content_Types].xml" in names:
            from qnprov.policy.office import ooxml_segments

            # XML parts are lexed in Python (several objects per tag): they get a tighter cap.
            xml_cap = budget.limits.max_xml_part_bytes
            for part_name, text in ooxml_segments(
                    archive, names, lambda m: _read_member(archive, m, budget, limit=xml_cap), budget.check_time):
                add_segment(out, f"{location}/{part_name}" if part_name else location, text)
            _inspect_embedded(archive, members, location, depth, budget, out)
            return
        if "mimetype" in names and _read_member(archive, "mimetype", budget).startswith(
                b"application/vnd.oasis.opendocument"):
            from qnprov.policy.office import odf_segments

            xml_cap = budget.limits.max_xml_part_bytes
            for part_name, text in odf_segments(names, lambda m: _read_member(archive, m, budget, limit=xml_cap),
                                                budget.check_time):
                add_segment(out, f"{location}/{part_name}", text)
            return
        for member in members:
            if member.is_dir():
                continue
            content = _read_member(archive, member.filename, budget)
            inspect_file(member.filename, content, f"{location}/{member.filename}", depth + 1, budget, out)
    except zipfile.BadZipFile as exc:
        out.problems.append(Problem(location, "uninspectable", f"corrupt zip entry ({exc})"))
    except (RuntimeError, NotImplementedError, zlib.error, EOFError, OSError) as exc:
        out.problems.append(Problem(location, "uninspectable", f"zip entry cannot be read ({exc})"))


def _inspect_embedded(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], location: str, depth: int,
                      budget: Budget, out: Extraction) -> None:
    """Objects embedded in an Office file (a docx inside a docx, a zip, a PDF)."""
    for member in members:
        if "/embeddings/" in member.filename and not member.is_dir():
            content = _read_member(archive, member.filename, budget)
            inspect_file(member.filename, content, f"{location}/{member.filename}", depth + 1, budget, out)


def _read_member(archive: zipfile.ZipFile, member: str, budget: Budget, *, limit: int | None = None) -> bytes:
    limit = budget.limits.max_member_bytes if limit is None else limit
    declared = archive.getinfo(member).file_size
    cap = min(limit, declared)
    chunks: list[bytes] = []
    size = 0
    with archive.open(member) as handle:
        # Never trust the declared size: read in slices and stop one byte past the cap.
        while size <= cap:
            chunk = handle.read(min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            budget.check_time()
    if size > declared:
        raise LimitExceeded(f"archive entry {member} is larger than its header declares")
    if size > limit:
        raise LimitExceeded(f"archive entry {member} is larger than {limit} bytes")
    budget.spend(size)
    return b"".join(chunks)


# -- legacy formats ----------------------------------------------------------------------

# UTF-16LE code units of Vietnamese text: Latin-1 (high byte 0), Latin Extended (01: đ ơ ư),
# combining marks (03), Latin Extended Additional (1E: ạ ả ấ ... ỹ) and punctuation (20).
_UTF16_RUN = re.compile(rb"(?:[\x09\x0a\x0d\x20-\x7e\xa0-\xff]\x00|[\x00-\xff][\x01\x03\x1e\x20])+")


def _inspect_ole(data: bytes, location: str, budget: Budget, out: Extraction) -> None:
    """Legacy Office (OLE compound file): encrypted -> uninspectable; Word 97-2003 through its
    piece table, with TCVN3/VNI readings; other kinds (.xls, .ppt, .msg) as UTF-16 text runs."""
    from qnprov.policy.legacy import (
        CompoundFile,
        CompoundFileError,
        encryption_reason,
        legacy_font_readings,
        word_text,
    )

    limit = budget.limits.max_member_bytes
    try:
        cfb = CompoundFile(data)
        streams = cfb.streams()
        reason = encryption_reason(cfb, streams, limit)
        if reason is not None:
            out.problems.append(Problem(location, "uninspectable", reason))
            return
        if "WordDocument" in streams:
            text = word_text(cfb, streams, limit)
            budget.spend(len(text) * 2)
            # The readings join the text in one segment: one finding per document.
            add_segment(out, location, "\n".join([text, *legacy_font_readings(text)]))
            return
    except (CompoundFileError, struct.error) as exc:
        # Held; the text runs that can still be seen are checked too (a marking rejects).
        out.problems.append(Problem(location, "uninspectable", f"unreadable Office 97-2003 file ({exc})"))
    lines: list[str] = []
    for run in _UTF16_RUN.findall(data):
        if len(run) < 6:
            continue
        text = run.decode("utf-16-le", errors="ignore")
        lines.extend(part for part in re.split(r"[\r\x07\x0b\x0c]", text) if part.strip())
    add_segment(out, location, "\n".join(lines))


_RTF_UNICODE = re.compile(r"\\u(-?\d+)\??")
_RTF_HEX = re.compile(r"\\'([0-9a-fA-F]{2})")
_RTF_PAR = re.compile(r"\\(?:par|line|cell|row)\b ?")
_RTF_CONTROL = re.compile(r"\\[a-zA-Z]+-?\d* ?|[{}]")


def rtf_to_text(data: bytes) -> str:
    text = data.decode("latin-1")
    codepage = re.search(r"\\ansicpg(\d+)", text)
    encoding = f"cp{codepage.group(1)}" if codepage else "cp1258"
    text = _RTF_UNICODE.sub(lambda m: chr(int(m.group(1)) % 65536), text)

    def _hex(match: re.Match[str]) -> str:
        try:
            return bytes([int(match.group(1), 16)]).decode(encoding)
        except (LookupError, UnicodeDecodeError):
            return ""

    text = _RTF_HEX.sub(_hex, text)
    text = _RTF_PAR.sub("\n", text)
    return _RTF_CONTROL.sub("", text)
