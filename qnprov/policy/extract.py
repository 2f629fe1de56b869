"""Turn a message into text segments to inspect, within hard limits.

Everything here treats its input as hostile. Each step checks a shared ``Budget``
(bytes expanded, members, depth, wall time); crossing a limit stops that branch and
records a ``Problem`` that the engine turns into a "cannot inspect" finding, so nothing
a blocking rule could not read is accepted silently.

This module walks the MIME tree and sniffs every file by content, handing each format to
its inspector: :mod:`.mime` (entity splitting and decoding), :mod:`.html_text`,
:mod:`.ziparchives` (zip, OOXML, ODF), :mod:`.archives` (tar and compression wrappers),
:mod:`.pdf`, :mod:`.legacy_files` (Office 97-2003, RTF). They share the types of
:mod:`.extract_types` and reach back into the walk only through an ``inspect`` callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import Message

from qnprov.policy.archives import compression_of, inspect_compressed, inspect_tar, looks_like_tar
from qnprov.policy.extract_types import (
    Budget,
    Extraction,
    LimitExceeded,
    Problem,
    SignedObject,
    add_segment,
)
from qnprov.policy.html_text import html_to_text
from qnprov.policy.legacy_files import inspect_ole, rtf_to_text
from qnprov.policy.markings import may_contain_marking
from qnprov.policy.mime import Entity, decode_body, decode_bytes, decode_header_value, split_entity, split_multipart
from qnprov.policy.models import Limits
from qnprov.policy.pdf import inspect_pdf
from qnprov.policy.vnfonts import legacy_font_readings
from qnprov.policy.ziparchives import inspect_zip

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
_SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
_SMIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}



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
        text = decode_bytes(data, part.get_content_charset())
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
        # asn1crypto.cms takes ~30 ms to import and only S/MIME parts need it here.
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
        inspect_zip(data, location, depth, budget, out, _recurse(budget, out))
    elif b"%PDF-" in head:
        inspect_pdf(data, location, budget, out)
    elif head.startswith(_OLE_MAGIC):
        inspect_ole(data, location, budget, out)
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
        text = rtf_to_text(data)  # old RTF is often in .VnTime or VNI-Times fonts
        add_segment(out, location, "\n".join([text, *legacy_font_readings(text)]))
    elif not _looks_binary(data) and _is_mostly_text(head):
        text = decode_bytes(data, charset)
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
