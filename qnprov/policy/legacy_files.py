"""Legacy formats: Office 97-2003 compound files and RTF.

The compound-file and Word readers are in :mod:`qnprov.policy.legacy`, the TCVN3/VNI
font readings in :mod:`qnprov.policy.vnfonts`; this module turns them into segments and
problems.
"""

from __future__ import annotations

import re
import struct

from qnprov.policy.extract_types import (
    Budget,
    Extraction,
    Problem,
    add_segment,
)
from qnprov.policy.legacy import (
    CompoundFile,
    CompoundFileError,
    encryption_reason,
    word_text,
)
from qnprov.policy.vnfonts import legacy_font_readings

# UTF-16LE code units of Vietnamese text: Latin-1 (high byte 0), Latin Extended (01: đ ơ ư),
# combining marks (03), Latin Extended Additional (1E: ạ ả ấ ... ỹ) and punctuation (20).
_UTF16_RUN = re.compile(rb"(?:[\x09\x0a\x0d\x20-\x7e\xa0-\xff]\x00|[\x00-\xff][\x01\x03\x1e\x20])+")


def inspect_ole(data: bytes, location: str, budget: Budget, out: Extraction) -> None:
    """Legacy Office (OLE compound file): encrypted -> uninspectable; Word 97-2003 through its
    piece table, with TCVN3/VNI readings; other kinds (.xls, .ppt, .msg) as UTF-16 text runs."""
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
