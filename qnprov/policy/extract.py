"""Turn a message into text segments to inspect, within hard limits.

Everything here treats its input as hostile. Each step checks a shared ``Budget``
(bytes expanded, members, depth, wall time); crossing a limit stops that branch and
records a ``Problem`` that the engine turns into a "cannot inspect" finding, so nothing
a blocking rule could not read is accepted silently.
"""

from __future__ import annotations

import email
import email.policy
import html
import io
import re
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from email.header import Header, decode_header, make_header
from email.message import Message
from typing import Literal

from qnprov.policy.markings import normalise_text
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
}
_TEXT_TYPES = {"text/plain", "text/html", "text/xml", "application/xml", "text/csv", "text/enriched"}
_SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
_SMIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}


def parse_message(raw: bytes) -> Message:
    # compat32 is the fastest parser in the standard library and never raises on defects.
    return email.message_from_bytes(raw, policy=email.policy.compat32)


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
    try:
        decoded = str(make_header(decode_header(text)))
    except Exception:  # malformed encoded-words: inspect the raw text instead
        decoded = text
    if any("\udc80" <= ch <= "\udcff" for ch in decoded):
        # 8-bit header bytes kept by the parser as surrogates: assume UTF-8, then cp1258.
        data = decoded.encode("utf-8", "surrogateescape")
        decoded = _decode_bytes(data, None)
    return decoded


def extract(message: Message, raw: bytes, limits: Limits) -> Extraction:
    """Segments, problems and signed objects of a whole message."""
    out = Extraction()
    budget = Budget(limits)
    try:
        _walk_message(message, raw, "", 0, budget, out)
    except LimitExceeded as exc:
        out.problems.append(Problem("message", "uninspectable", exc.reason))
    except RecursionError:
        out.problems.append(Problem("message", "uninspectable", "structure nested too deeply"))
    return out


def _walk_message(message: Message, raw: bytes | None, prefix: str, depth: int, budget: Budget,
                  out: Extraction) -> None:
    subject = decode_header_value(message.get("Subject"))
    if subject:
        out.segments.append(Segment(f"{prefix}subject" if prefix else "subject", normalise_text(subject)))
    ctype = message.get_content_type()
    if ctype == "multipart/signed" or (ctype in _SMIME_TYPES and _smime_is_signed(message)):
        out.signed.append(SignedObject(prefix.rstrip("/") or "message", "smime",
                                       raw if raw is not None else message.as_bytes()))
    _walk_part(message, prefix, depth, budget, out)


def _smime_is_signed(message: Message) -> bool:
    smime_type = (message.get_param("smime-type") or "")
    return str(smime_type).lower() in {"signed-data", ""}


def _walk_part(part: Message, prefix: str, depth: int, budget: Budget, out: Extraction) -> None:
    budget.parts += 1
    if budget.parts > budget.limits.max_mime_parts:
        raise LimitExceeded(f"more than {budget.limits.max_mime_parts} MIME parts")
    if depth > budget.limits.max_depth:
        raise LimitExceeded(f"nesting deeper than {budget.limits.max_depth} levels")
    budget.check_time()
    if part.is_multipart():
        payload = part.get_payload()
        if not isinstance(payload, list):
            return
        children = [child for child in payload if isinstance(child, Message)]
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            for child in children:
                name = _part_name(part, "message.eml")
                location = f"{prefix}attachment:{name}" if not prefix else f"{prefix}{name}"
                _walk_message(child, None, location + "/", depth + 1, budget, out)
            return
        if ctype == "multipart/signed":
            # The second child is the signature over the first; it was recorded with the
            # multipart/signed entity, so only the signed content is walked.
            children = children[:1]
        for child in children:
            _walk_part(child, prefix, depth + 1, budget, out)
        _pair_detached_signatures(children, prefix, out)
        return
    ctype = part.get_content_type()
    filename = part.get_filename()
    try:
        data = part.get_payload(decode=True)
    except Exception:  # base64/QP garbage: compat32 is lenient, but be sure
        data = None
    if not isinstance(data, bytes):
        data = b""
    budget.spend(len(data))
    disposition = str(part.get("Content-Disposition", "")).strip().lower()
    inline_text = filename is None and not disposition.startswith("attachment")
    if inline_text and ctype in {"text/plain", "text/html"} and not _looks_binary(data):
        text = _decode_bytes(data, part.get_content_charset())
        if ctype == "text/html":
            text = html_to_text(text)
        out.segments.append(Segment(f"{prefix}body" if prefix else "body", normalise_text(text)))
        return
    if ctype in _SMIME_TYPES:
        _inspect_opaque_smime(part, data, prefix, depth, budget, out)
        return
    name = (filename and decode_header_value(filename)) or _default_name(ctype)
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
    _walk_message(parse_message(inner), inner, location + "/", depth + 1, budget, out)


def _pair_detached_signatures(children: list[Message], prefix: str, out: Extraction) -> None:
    """A detached 'x.pdf.p7s' signs the sibling 'x.pdf': attach that content."""
    by_name: dict[str, bytes] = {}
    for child in children:
        name = child.get_filename()
        if name and not child.is_multipart():
            payload = child.get_payload(decode=True)
            if isinstance(payload, bytes):
                by_name[decode_header_value(name)] = payload
    for index, signed in enumerate(out.signed):
        if signed.kind != "p7s" or signed.content is not None:
            continue
        base = signed.location.rsplit("/", 1)[-1].removeprefix("attachment:")
        stem = base[:-4] if base.lower().endswith((".p7s", ".p7m")) else base
        if stem in by_name:
            out.signed[index] = SignedObject(signed.location, "p7s", signed.data, by_name[stem])


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


_BLOCK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|/table|p|div|tr|li|h[1-6])\b[^>]*>", re.IGNORECASE)
_CELL_TAGS = re.compile(r"<\s*/?\s*t[dh]\b[^>]*>", re.IGNORECASE)
_DROP_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_ANY_TAG = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """Visible text of HTML with line and cell breaks kept (stamps are matched per cell)."""
    markup = _DROP_BLOCKS.sub(" ", markup)
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
        _inspect_ole(data, location, out)
    elif head.startswith(b"\x1f\x8b"):
        _inspect_gzip(name, data, location, depth, budget, out)
    elif any(head.startswith(magic) for magic in _UNSUPPORTED_ARCHIVES):
        kind = next(label for magic, label in _UNSUPPORTED_ARCHIVES.items() if head.startswith(magic))
        out.problems.append(Problem(location, "uninspectable", f"{kind} cannot be opened by the inspector"))
    elif _looks_like_message(head):
        child = parse_message(data)
        _walk_message(child, data, location + "/", depth, budget, out)
    elif head.startswith(b"{\\rtf"):
        out.segments.append(Segment(location, normalise_text(rtf_to_text(data))))
    elif not _looks_binary(data) and _is_mostly_text(head):
        text = _decode_bytes(data, charset)
        if declared_type == "text/html" or name.lower().endswith((".htm", ".html")) or head.lstrip()[:5].lower() in {
                b"<html", b"<!doc"}:
            text = html_to_text(text)
        out.segments.append(Segment(location, normalise_text(text)))
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


def _inspect_gzip(name: str, data: bytes, location: str, depth: int, budget: Budget, out: Extraction) -> None:
    limit = budget.limits.max_member_bytes
    decompressor = zlib.decompressobj(wbits=31)
    try:
        inner = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        out.problems.append(Problem(location, "uninspectable", f"corrupt gzip data ({exc})"))
        return
    if len(inner) > limit or len(inner) > budget.limits.max_expansion_ratio * max(len(data), 1):
        out.problems.append(Problem(location, "uninspectable", "gzip expands beyond the limits"))
        return
    budget.spend(len(inner))
    inner_name = name[:-3] if name.lower().endswith(".gz") else name + ".out"
    inspect_file(inner_name, inner, f"{location}/{inner_name}", depth + 1, budget, out)


# -- zip family: OOXML, ODF, plain archives -------------------------------------------


def _inspect_zip(name: str, data: bytes, location: str, depth: int, budget: Budget, out: Extraction) -> None:
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
    names = {member.filename for member in members}
    try:
        if "[Content_Types].xml" in names:
            from qnprov.policy.office import ooxml_segments

            for part_name, text in ooxml_segments(archive, names, lambda m: _read_member(archive, m, budget)):
                out.segments.append(Segment(f"{location}/{part_name}" if part_name else location,
                                            normalise_text(text)))
            _inspect_embedded(archive, members, location, depth, budget, out)
            return
        if "mimetype" in names and _read_member(archive, "mimetype", budget).startswith(
                b"application/vnd.oasis.opendocument"):
            from qnprov.policy.office import odf_segments

            for part_name, text in odf_segments(names, lambda m: _read_member(archive, m, budget)):
                out.segments.append(Segment(f"{location}/{part_name}", normalise_text(text)))
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


def _read_member(archive: zipfile.ZipFile, member: str, budget: Budget) -> bytes:
    limit = budget.limits.max_member_bytes
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


# -- legacy formats, best effort ------------------------------------------------------

_UTF16_RUN = re.compile(rb"(?:[\x09\x0a\x0d\x20-\x7e\xa0-\xff][\x00]|[\x00-\xff][\x01-\x1f\x20-\x2f])+")


def _inspect_ole(data: bytes, location: str, out: Extraction) -> None:
    """Legacy .doc/.xls: Word stores Vietnamese text as UTF-16LE runs; read those.

    TCVN3/VNI font-encoded documents are not decoded (see docs/policy.md).
    """
    lines: list[str] = []
    for run in _UTF16_RUN.findall(data):
        if len(run) < 6:
            continue
        text = run.decode("utf-16-le", errors="ignore")
        lines.extend(part for part in re.split(r"[\r\x07\x0b\x0c]", text) if part.strip())
    out.segments.append(Segment(location, normalise_text("\n".join(lines))))


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
