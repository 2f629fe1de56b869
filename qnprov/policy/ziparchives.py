"""The zip family: OOXML and ODF documents (text through :mod:`qnprov.policy.office`) and
plain zip archives, whose entries are inspected again through the ``inspect`` callback.

The entry count is read from the end-of-central-directory record before ``zipfile`` builds
one object per entry; each entry is read in slices and never past its cap.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from itertools import chain

from qnprov.policy.archives import Inspect
from qnprov.policy.extract_types import (
    Budget,
    Extraction,
    LimitExceeded,
    Problem,
    add_segment,
)
from qnprov.policy.office import odf_segments, ooxml_segments
from qnprov.policy.office_meta import odf_meta_segments, ooxml_meta_segments


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


def inspect_zip(data: bytes, location: str, depth: int, budget: Budget, out: Extraction, inspect: Inspect) -> None:
    """Text of an OOXML or ODF document, or every entry of a plain archive, one level deeper."""
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
            # XML parts are lexed in Python (several objects per tag): they get a tighter cap.
            xml_cap = budget.limits.max_xml_part_bytes
            read_xml = lambda m: _read_member(archive, m, budget, limit=xml_cap)  # noqa: E731
            for part_name, text in chain(ooxml_segments(archive, names, read_xml, budget.check_time),
                                         ooxml_meta_segments(names, read_xml, budget.check_time)):
                add_segment(out, f"{location}/{part_name}" if part_name else location, text)
            _inspect_embedded(archive, members, location, depth, budget, inspect)
            return
        if "mimetype" in names and _read_member(archive, "mimetype", budget).startswith(
                b"application/vnd.oasis.opendocument"):
            xml_cap = budget.limits.max_xml_part_bytes
            read_xml = lambda m: _read_member(archive, m, budget, limit=xml_cap)  # noqa: E731
            for part_name, text in chain(odf_segments(names, read_xml, budget.check_time),
                                         odf_meta_segments(names, read_xml, budget.check_time)):
                add_segment(out, f"{location}/{part_name}", text)
            return
        for member in members:
            if member.is_dir():
                continue
            content = _read_member(archive, member.filename, budget)
            inspect(member.filename, content, f"{location}/{member.filename}", depth + 1)
    except zipfile.BadZipFile as exc:
        out.problems.append(Problem(location, "uninspectable", f"corrupt zip entry ({exc})"))
    except (RuntimeError, NotImplementedError, zlib.error, EOFError, OSError) as exc:
        out.problems.append(Problem(location, "uninspectable", f"zip entry cannot be read ({exc})"))


def _inspect_embedded(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], location: str, depth: int,
                      budget: Budget, inspect: Inspect) -> None:
    """Objects embedded in an Office file (a docx inside a docx, a zip, a PDF)."""
    for member in members:
        if "/embeddings/" in member.filename and not member.is_dir():
            content = _read_member(archive, member.filename, budget)
            inspect(member.filename, content, f"{location}/{member.filename}", depth + 1)


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
