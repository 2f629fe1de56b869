"""Legacy Office files: the OLE compound-file container ([MS-CFB]) and Word 97-2003 text
([MS-DOC] piece table). The Vietnamese 8-bit font encodings (TCVN3/ABC, VNI) that such
documents were typed in are read by :mod:`qnprov.policy.vnfonts`.

The compound-file reader is small and strict on purpose: the mail host gets no extra
dependency, and every structure it follows (sector chains, the directory tree, the piece
table) is bounded by the input size and checked for loops, so a hostile file ends in a
``CompoundFileError`` (held as uninspectable), never in a hang. ``benchmarks/cfb_reader.py``
compares it with olefile.

What is held as uninspectable rather than guessed at:
* a password-protected OOXML file: a compound file holding ``EncryptionInfo`` and
  ``EncryptedPackage`` streams ([MS-OFFCRYPTO] 2.3.4), as Office and msoffcrypto-tool write it;
* a Word document with ``fEncrypted`` set (RC4 or XOR obfuscation), an Excel 97 workbook
  with a FILEPASS record, a PowerPoint 97 file with an ``EncryptedSummary`` stream;
* a Word document whose piece table cannot be followed, a fast-saved Word 6/95 document,
  and a damaged container.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_FREE, _END_OF_CHAIN = 0xFFFFFFFF, 0xFFFFFFFE
_MAX_REGULAR = 0xFFFFFFFA  # sector numbers above this are markers
_STREAM, _STORAGE, _ROOT = 2, 1, 5


class CompoundFileError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    path: str  # "WordDocument", "ObjectPool/_123/Ole10Native"
    kind: int
    start: int
    size: int


class CompoundFile:
    """Read-only view of a compound file held in memory ([MS-CFB] versions 3 and 4)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 512 or not data.startswith(MAGIC):
            raise CompoundFileError("not a compound file")
        major, byte_order, sector_shift, mini_shift = struct.unpack_from("<HHHH", data, 0x1A)
        if byte_order != 0xFFFE or (major, sector_shift) not in {(3, 9), (4, 12)} or mini_shift != 6:
            raise CompoundFileError("unsupported compound file header")
        self.data = data
        self.sector_size = 1 << sector_shift
        self.sectors = max(0, (len(data) - self.sector_size) // self.sector_size + 1)
        (fat_count, first_dir, _, self.mini_cutoff, first_minifat, minifat_count,
         first_difat, difat_count) = struct.unpack_from("<IIIIIIII", data, 0x2C)
        if fat_count > self.sectors or difat_count > self.sectors:
            raise CompoundFileError("FAT larger than the file")
        fat_sectors = list(struct.unpack_from("<109I", data, 0x4C))
        difat = first_difat
        per_difat = self.sector_size // 4 - 1
        for _ in range(difat_count):
            if difat > _MAX_REGULAR:
                break
            block = self._sector(difat)
            fat_sectors.extend(struct.unpack_from(f"<{per_difat}I", block))
            (difat,) = struct.unpack_from("<I", block, per_difat * 4)
        fat = bytearray()
        for sector in fat_sectors[:fat_count]:
            fat += self._sector(sector)
        self.fat = memoryview(bytes(fat)).cast("I")
        self.entries = self._directory(first_dir)
        root = self.entries[0] if self.entries else None
        if root is None or root.kind != _ROOT:
            raise CompoundFileError("no root entry")
        self.mini_stream = self._chain_bytes(root.start, root.size, self.fat, self.sector_size, self._sector)
        minifat = self._chain_bytes(first_minifat, minifat_count * self.sector_size, self.fat, self.sector_size,
                                    self._sector) if minifat_count else b""
        self.minifat = memoryview(minifat[: len(minifat) // 4 * 4]).cast("I")

    # -- sectors and chains -------------------------------------------------------------

    def _sector(self, number: int) -> bytes:
        if number >= self.sectors:
            raise CompoundFileError(f"sector {number} is outside the file")
        start = (number + 1) * self.sector_size
        block = self.data[start:start + self.sector_size]
        return block if len(block) == self.sector_size else block + bytes(self.sector_size - len(block))

    def _mini_sector(self, number: int) -> bytes:
        start = number * 64
        if start + 64 > len(self.mini_stream):
            raise CompoundFileError(f"mini sector {number} is outside the mini stream")
        return self.mini_stream[start:start + 64]

    @staticmethod
    def _chain_bytes(start: int, size: int, table: memoryview, unit: int, read: object) -> bytes:
        """The first ``size`` bytes of the chain from ``start``; loops and overruns raise."""
        needed = -(-size // unit)
        out: list[bytes] = []
        sector = start
        seen: set[int] = set()
        for _ in range(needed):
            if sector > _MAX_REGULAR or sector >= len(table):
                raise CompoundFileError("sector chain ends early")
            if sector in seen:
                raise CompoundFileError("sector chain loops")
            seen.add(sector)
            out.append(read(sector))  # type: ignore[operator]
            sector = table[sector]
        return b"".join(out)[:size]

    def _chain_any(self, start: int) -> bytes:
        """A chain of unknown length (the directory): at most one visit per sector."""
        out: list[bytes] = []
        sector = start
        seen: set[int] = set()
        while sector <= _MAX_REGULAR:
            if sector in seen or sector >= len(self.fat):
                raise CompoundFileError("directory chain loops or leaves the FAT")
            seen.add(sector)
            out.append(self._sector(sector))
            sector = self.fat[sector]
        return b"".join(out)

    # -- directory --------------------------------------------------------------------------

    def _directory(self, first: int) -> list[Entry]:
        raw = self._chain_any(first)
        count = len(raw) // 128
        records = []
        for index in range(count):
            record = raw[index * 128:(index + 1) * 128]
            name_length = min(struct.unpack_from("<H", record, 64)[0], 64)
            name = record[:max(0, name_length - 2)].decode("utf-16-le", "replace")
            kind = record[66]
            left, right, child = struct.unpack_from("<III", record, 68)
            start, size = struct.unpack_from("<IQ", record, 116)
            if self.sector_size == 512:
                size &= 0xFFFFFFFF  # version 3: the high half may hold garbage
            records.append((name, kind, left, right, child, start, size))
        if not records:
            return []
        entries: list[Entry] = []
        name, kind, _, _, child, start, size = records[0]
        entries.append(Entry("", kind, start, size))
        seen = {0}
        # Walk the red-black trees iteratively; each record is visited at most once.
        stack: list[tuple[int, str]] = [(child, "")]
        while stack:
            index, parent = stack.pop()
            if index >= count:  # NOSTREAM (0xFFFFFFFF) or out of range
                continue
            if index in seen:
                raise CompoundFileError("directory tree loops")
            seen.add(index)
            name, kind, left, right, child, start, size = records[index]
            path = f"{parent}/{name}" if parent else name
            entries.append(Entry(path, kind, start, size))
            stack.extend(((left, parent), (right, parent)))
            if kind == _STORAGE:
                stack.append((child, path))
        return entries

    def streams(self) -> dict[str, Entry]:
        return {entry.path: entry for entry in self.entries if entry.kind == _STREAM}

    def read(self, path: str, limit: int) -> bytes:
        entry = self.streams().get(path)
        if entry is None:
            raise CompoundFileError(f"no stream {path}")
        if entry.size > limit:
            raise CompoundFileError(f"stream {path} is {entry.size} bytes, over the limit")
        if entry.size < self.mini_cutoff:
            return self._chain_bytes(entry.start, entry.size, self.minifat, 64, self._mini_sector)
        return self._chain_bytes(entry.start, entry.size, self.fat, self.sector_size, self._sector)


# -- what kind of file, and is it encrypted ---------------------------------------------------


def encryption_reason(cfb: CompoundFile, streams: dict[str, Entry], limit: int) -> str | None:
    """Why this compound file cannot be read without a password, or None."""
    if "EncryptionInfo" in streams or "EncryptedPackage" in streams:
        return "password-protected Office document (encrypted OOXML package)"
    if "EncryptedSummary" in streams:
        return "password-protected PowerPoint 97-2003 presentation"
    if "WordDocument" in streams:
        head = cfb.read("WordDocument", limit)[:0x20]
        if len(head) >= 0x0C and struct.unpack_from("<H", head, 0x0A)[0] & 0x0100:
            return "password-protected Word 97-2003 document"
    if "Workbook" in streams or "Book" in streams:
        book = cfb.read("Workbook" if "Workbook" in streams else "Book", limit)
        if _has_filepass(book):
            return "password-protected Excel 97-2003 workbook"
    return None


def _has_filepass(book: bytes) -> bool:
    """FILEPASS (0x002F) follows the first BOF record of an encrypted BIFF workbook."""
    position = 0
    for _ in range(64):
        if position + 4 > len(book):
            return False
        record, length = struct.unpack_from("<HH", book, position)
        if record == 0x002F:
            return True
        if record == 0x000A:  # EOF of the globals substream
            return False
        position += 4 + length
    return False


# -- Word 97-2003 text ----------------------------------------------------------------------


def word_text(cfb: CompoundFile, streams: dict[str, Entry], limit: int) -> str:
    """All the text of a Word document: main text, footnotes, headers, comments, text boxes.

    Word 97+ keeps it as pieces ([MS-DOC] 2.9.177 PlcPcd) in the table stream's Clx; each
    piece is 8-bit ("compressed", cp1252) or UTF-16LE. Word 6/95 keeps non-fast-saved text
    as 8-bit bytes between fcMin and fcMac.
    """
    document = cfb.read("WordDocument", limit)
    if len(document) < 0x20 or struct.unpack_from("<H", document, 0)[0] != 0xA5EC:
        raise CompoundFileError("WordDocument stream has no Word file header")
    n_fib, _, _, _, flags = struct.unpack_from("<HHHHH", document, 2)
    if n_fib < 0x00C0:
        if not 101 <= n_fib <= 105:
            raise CompoundFileError(f"unknown Word file version (nFib {n_fib})")
        if flags & 0x0004:
            raise CompoundFileError("fast-saved Word 6/95 document")
        fc_min, fc_mac = struct.unpack_from("<II", document, 0x18)
        if not 0 < fc_min <= fc_mac <= len(document):
            raise CompoundFileError("Word 6/95 text range is outside the document")
        return clean_word_text(document[fc_min:fc_mac].decode("cp1252", "replace"))
    table_name = "1Table" if flags & 0x0200 else "0Table"
    if table_name not in streams:
        raise CompoundFileError(f"no {table_name} stream")
    offset = 0x20
    (csw,) = struct.unpack_from("<H", document, offset)
    offset += 2 + csw * 2
    (cslw,) = struct.unpack_from("<H", document, offset)
    offset += 2 + cslw * 4
    (fc_lcb_count,) = struct.unpack_from("<H", document, offset)
    if fc_lcb_count <= 33 or offset + 2 + 34 * 8 > len(document):
        raise CompoundFileError("Word file header has no piece table pointer")
    fc_clx, lcb_clx = struct.unpack_from("<II", document, offset + 2 + 33 * 8)
    table = cfb.read(table_name, limit)
    if lcb_clx == 0 or fc_clx + lcb_clx > len(table):
        raise CompoundFileError("piece table is outside the table stream")
    return clean_word_text("".join(_pieces(document, table[fc_clx:fc_clx + lcb_clx], limit)))


def _pieces(document: bytes, clx: bytes, limit: int) -> Iterator[str]:
    position = 0
    while position < len(clx) and clx[position] == 0x01:  # Prc: property modifiers, skipped
        if position + 3 > len(clx):
            raise CompoundFileError("truncated piece table")
        (size,) = struct.unpack_from("<h", clx, position + 1)
        if size < 0:
            raise CompoundFileError("negative property block in the piece table")
        position += 3 + size
    if position + 5 > len(clx) or clx[position] != 0x02:
        raise CompoundFileError("no piece table in the Clx")
    (length,) = struct.unpack_from("<I", clx, position + 1)
    plc = clx[position + 5:position + 5 + length]
    if len(plc) != length or length < 4 or (length - 4) % 12:
        raise CompoundFileError("piece table has a bad length")
    count = (length - 4) // 12
    cps = struct.unpack_from(f"<{count + 1}I", plc)
    total = 0
    for index in range(count):
        start_cp, end_cp = cps[index], cps[index + 1]
        if end_cp < start_cp:
            raise CompoundFileError("piece table positions go backwards")
        (fc,) = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * index + 2)
        chars = end_cp - start_cp
        total += chars
        if total * 2 > limit:
            raise CompoundFileError("document text is over the size limit")
        if fc & 0x40000000:
            start = (fc & 0x3FFFFFFF) // 2
            raw = document[start:start + chars]
            text = raw.decode("cp1252", "replace")
        else:
            raw = document[fc:fc + 2 * chars]
            text = raw.decode("utf-16-le", "replace")
        if len(text) != chars:
            raise CompoundFileError("a text piece is outside the WordDocument stream")
        yield text


_CONTROLS = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x07": "\t", "\x1e": "-",
                           **{chr(code): None for code in (*range(0x00, 0x07), 0x08, 0x0e, 0x0f,
                                                           *range(0x10, 0x13), *range(0x16, 0x1e), 0x1f)}})


def clean_word_text(text: str) -> str:
    """Paragraph, cell and line marks to line breaks and tabs; field instructions dropped.

    A field is 0x13 instruction 0x14 result 0x15 (the separator may be missing); only the
    result is displayed. Fields nest, so a depth counter tracks whether we are inside an
    instruction.
    """
    if "\x13" in text:
        out: list[str] = []
        in_instruction: list[bool] = []
        position = 0
        for match in re.finditer("[\x13\x14\x15]", text):
            if not any(in_instruction):
                out.append(text[position:match.start()])
            position = match.end()
            mark = match.group()
            if mark == "\x13":
                in_instruction.append(True)
            elif mark == "\x14" and in_instruction:
                in_instruction[-1] = False
            elif mark == "\x15" and in_instruction:
                in_instruction.pop()
        if not any(in_instruction):
            out.append(text[position:])
        text = "".join(out)
    return text.translate(_CONTROLS)
