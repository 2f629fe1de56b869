"""MIME parsing for inspection: entities split by boundary search, bodies and headers decoded."""

from __future__ import annotations

import binascii
import email
import email.parser
import email.policy
import re
from dataclasses import dataclass
from email.header import Header
from email.message import Message


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
            decode_bytes(chunk.encode("utf-8", "surrogateescape"), None) if "unknown" in str(charset)
            else chunk for chunk, charset in getattr(value, "_chunks", [])
        )
    text = str(value)
    if "=?" in text:
        text = _decode_encoded_words(text)
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        # 8-bit header bytes kept by the parser as surrogates: assume UTF-8, then cp1258.
        text = decode_bytes(text.encode("utf-8", "surrogateescape"), None)
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
                out.append(decode_bytes(pending, pending_charset))
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
        out.append(decode_bytes(pending, pending_charset))
    out.append(text[position:])
    return "".join(out)



def decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Vietnamese legacy mail without a usable charset is most often windows-1258.
    return data.decode("cp1258", errors="replace")
