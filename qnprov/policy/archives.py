"""Tar archives and single-file compression wrappers (gzip, bzip2, xz), unpacked in memory.

Nothing is written to disk, so member names cannot traverse anywhere; what matters is that
a hostile archive cannot exhaust memory or time, and that nothing is skipped silently:

* a compressed stream is decompressed with an output cap of ``min(max_member_bytes,
  max_expansion_ratio x input)``; crossing it, a truncated stream, or data after the end of
  the last stream makes the file uninspectable;
* concatenated streams (``cat a.gz b.gz``, ``pbzip2``, multi-stream xz) are all read, as
  gzip(1), bzip2(1) and xz(1) do;
* xz/lzma decoding runs under a memory limit (a header may ask for a 1.5 GiB dictionary);
* a tar is read member by member with ``tarfile`` on a ``BytesIO``; the member count, each
  member's size, the shared file count and the expanded total are checked before reading;
  tarfile stops quietly at a damaged header after the first, so anything but zero padding
  after the last member read makes the archive uninspectable;
* every member is inspected again through the ``inspect`` callback (the extractor's
  ``inspect_file``, which sniffs by content), one level deeper.
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zlib
from collections.abc import Callable

from qnprov.policy.extract_types import Budget, Extraction, LimitExceeded, Problem

#: xz -9 needs 65 MiB of dictionary to decode; more than this is refused, not allocated.
XZ_MEMORY_LIMIT = 96 * 2**20

_BZ2_BLOCK = b"\x31\x41\x59\x26\x53\x59"
_BZ2_END = b"\x17\x72\x45\x38\x50\x90"
_XZ_MAGIC = b"\xfd7zXZ\x00"

Inspect = Callable[[str, bytes, str, int], None]  # (name, data, location, depth)


def compression_of(head: bytes) -> str | None:
    """'gzip', 'bzip2' or 'xz' when ``head`` starts a stream of that format."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4] in b"123456789" and head[4:10] in (_BZ2_BLOCK, _BZ2_END):
        return "bzip2"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    return None


class CompressionProblem(Exception):
    pass


class _Stream:
    """One decoder interface over zlib (gzip framing), bz2 and lzma (xz framing)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.zlib = zlib.decompressobj(wbits=31) if kind == "gzip" else None
        self.other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = None
        if kind == "bzip2":
            self.other = bz2.BZ2Decompressor()
        elif kind == "xz":
            self.other = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)

    def step(self, data: bytes, max_length: int) -> tuple[bytes, bytes, bool]:
        """(output, input left to feed, whether the decoder is starved for input)."""
        if self.zlib is not None:
            chunk = self.zlib.decompress(data, max_length)
            tail = self.zlib.unconsumed_tail
            return chunk, tail, not tail
        assert self.other is not None
        chunk = self.other.decompress(data, max_length)
        return chunk, b"", self.other.needs_input

    @property
    def eof(self) -> bool:
        return self.zlib.eof if self.zlib is not None else bool(self.other and self.other.eof)

    @property
    def unused_data(self) -> bytes:
        if self.zlib is not None:
            return self.zlib.unused_data
        return self.other.unused_data if self.other is not None else b""


def decompress(kind: str, data: bytes, cap: int, check: Callable[[], None]) -> bytes:
    """All streams of ``data``, at most ``cap`` bytes; raises CompressionProblem otherwise."""
    out: list[bytes] = []
    size = 0
    pending = data
    stream = _Stream(kind)
    while True:
        check()
        try:
            chunk, pending, starved = stream.step(pending, cap + 1 - size)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            raise CompressionProblem(f"corrupt {kind} data ({exc})") from None
        out.append(chunk)
        size += len(chunk)
        if size > cap:
            raise CompressionProblem(f"{kind} data expands beyond {cap} bytes")
        if stream.eof:
            rest = stream.unused_data
            if rest.count(b"\x00") == len(rest):
                return b"".join(out)
            if compression_of(rest[:16]) != kind:
                raise CompressionProblem(f"data after the end of the {kind} stream")
            stream, pending = _Stream(kind), rest
            continue
        if starved and not chunk:
            raise CompressionProblem(f"truncated {kind} data")


def inner_name(name: str, kind: str) -> str:
    lower = name.lower()
    for suffix, replacement in ((".tgz", ".tar"), (".taz", ".tar"), (".tbz2", ".tar"), (".tbz", ".tar"),
                                (".txz", ".tar"), (".gz", ""), (".bz2", ""), (".xz", "")):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)] + replacement
    return f"{name}.{kind}-content"


def inspect_compressed(kind: str, name: str, data: bytes, location: str, depth: int, budget: Budget,
                       out: Extraction, inspect: Inspect) -> None:
    limits = budget.limits
    cap = min(limits.max_member_bytes, int(limits.max_expansion_ratio * max(len(data), 1)))
    try:
        inner = decompress(kind, data, cap, budget.check_time)
    except CompressionProblem as exc:
        out.problems.append(Problem(location, "uninspectable", str(exc)))
        return
    budget.spend(len(inner))
    member = inner_name(name, kind)
    inspect(member, inner, f"{location}/{member}", depth + 1)


def looks_like_tar(data: bytes) -> bool:
    """A POSIX/GNU tar header ("ustar" magic), or an old v7 header with a valid checksum."""
    if len(data) < 512:
        return False
    if data[257:262] == b"ustar":
        return True
    header = data[:512]
    if not header[:1].strip(b"\x00") or header[156:157] not in b"\x000123456":
        return False
    field = header[148:156].replace(b"\x00", b" ").strip()
    if not field or any(byte not in b"01234567" for byte in field):
        return False
    return int(field, 8) == sum(header[:148]) + 8 * 32 + sum(header[156:])


def inspect_tar(data: bytes, location: str, depth: int, budget: Budget, out: Extraction, inspect: Inspect) -> None:
    limits = budget.limits
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            count = 0
            while True:
                member = archive.next()
                if member is None:
                    break
                count += 1
                budget.files += 1
                if count > limits.max_archive_members:
                    out.problems.append(Problem(location, "uninspectable",
                                                f"archive has more than {limits.max_archive_members} entries"))
                    return
                if budget.files > limits.max_total_files:
                    raise LimitExceeded(f"more than {limits.max_total_files} files in archives")
                budget.check_time()
                if not member.isreg():
                    continue  # directories, links, devices, FIFOs: no content of their own
                if member.size > limits.max_member_bytes:
                    out.problems.append(Problem(f"{location}/{member.name}", "uninspectable",
                                                f"entry is {member.size} bytes, over the limit"))
                    return
                handle = archive.extractfile(member)
                content = handle.read() if handle is not None else b""
                budget.spend(len(content))
                members.append((member.name, content))
            end = archive.offset
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        out.problems.append(Problem(location, "uninspectable", f"unreadable tar archive ({exc})"))
        return
    if data.count(b"\x00", end) != len(data) - end:  # no copy of a large tail
        out.problems.append(Problem(location, "uninspectable",
                                    f"tar archive has unreadable data after offset {end} (damaged header?)"))
        return
    for member_name, content in members:
        inspect(member_name, content, f"{location}/{member_name}", depth + 1)
