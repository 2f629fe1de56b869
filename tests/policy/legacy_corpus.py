"""Office 97-2003 files built in memory: a minimal compound-file ([MS-CFB] v3) writer and a
Word 97 document with a real piece table ([MS-DOC]).

No maintained library writes .doc files, so this writer is the test's own. Its output is
read back by olefile and msoffcrypto-tool in the tests (independent readers), which is what
keeps it honest. Limits: version 3 only (512-byte sectors), at most 109 FAT sectors (about
6.8 MiB), no DIFAT chain, and a directory tree that is a sorted right-leaning chain (valid,
not balanced). Streams under 4096 bytes go to the mini stream, as the format requires.
"""

from __future__ import annotations

import struct

SECTOR = 512
FREE, END, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _entry(name: str, kind: int, start: int, size: int, *, right: int = NOSTREAM, child: int = NOSTREAM) -> bytes:
    encoded = (name + "\0").encode("utf-16-le") if name else b""
    return struct.pack("<64sHBBIII16sIQQIQ", encoded.ljust(64, b"\0"), len(encoded), kind, 1, NOSTREAM, right,
                       child, bytes(16), 0, 0, 0, start, size)


def cfb(streams: dict[str, bytes]) -> bytes:
    """A compound file whose root storage holds ``streams``."""
    sectors: list[bytes] = []
    fat: list[int] = []

    def allocate(data: bytes) -> int:
        if not data:
            return END
        count = -(-len(data) // SECTOR)
        start = len(sectors)
        for index in range(count):
            sectors.append(data[index * SECTOR:(index + 1) * SECTOR].ljust(SECTOR, b"\0"))
            fat.append(start + index + 1 if index < count - 1 else END)
        return start

    names = sorted(streams, key=lambda name: (len(name), name.upper()))  # the CFB name order
    mini = bytearray()
    minifat: list[int] = []
    placed: list[tuple[str, int, int]] = []
    for name in names:
        data = streams[name]
        if len(data) < 4096:
            count = -(-len(data) // 64)
            start = len(mini) // 64 if count else END
            minifat.extend(len(mini) // 64 + index + 1 if index < count - 1 else END for index in range(count))
            mini += data.ljust(count * 64, b"\0")
        else:
            start = allocate(data)
        placed.append((name, start, len(data)))
    root_start = allocate(bytes(mini))
    minifat_bytes = struct.pack(f"<{len(minifat)}I", *minifat) if minifat else b""
    minifat_bytes += struct.pack("<I", FREE) * ((-len(minifat_bytes) % SECTOR) // 4)
    minifat_start = allocate(minifat_bytes)
    directory = [_entry("Root Entry", 5, root_start, len(mini), child=1 if placed else NOSTREAM)]
    for index, (name, start, size) in enumerate(placed, start=1):
        directory.append(_entry(name, 2, start, size, right=index + 1 if index < len(placed) else NOSTREAM))
    while len(directory) % 4:
        directory.append(_entry("", 0, 0, 0))
    directory_start = allocate(b"".join(directory))
    fat_count = 1
    while len(sectors) + fat_count > fat_count * (SECTOR // 4):
        fat_count += 1
    assert fat_count <= 109, "this writer has no DIFAT chain"
    fat_ids = list(range(len(sectors), len(sectors) + fat_count))
    table = fat + [FATSECT] * fat_count
    table += [FREE] * (fat_count * SECTOR // 4 - len(table))
    fat_bytes = struct.pack(f"<{len(table)}I", *table)
    header = struct.pack("<8s16sHHHHH6sIIIIIIIII", MAGIC, bytes(16), 0x3E, 3, 0xFFFE, 9, 6, bytes(6), 0, fat_count,
                         directory_start, 0, 4096, minifat_start, len(minifat_bytes) // SECTOR, END, 0)
    header += struct.pack("<109I", *(fat_ids + [FREE] * (109 - fat_count)))
    return header + b"".join(sectors) + fat_bytes


Piece = tuple[str, bool]  # (text, stored as 8-bit "compressed" cp1252)


def word97(pieces: list[Piece], *, encrypted: bool = False, table_name: str = "1Table",
           extra_streams: dict[str, bytes] | None = None) -> bytes:
    """A Word 97 document whose text is ``pieces`` in order (Word ends the text with a paragraph mark)."""
    text_start = 0x800
    body = bytearray()
    descriptors: list[tuple[int, int, int]] = []  # (start cp, end cp, fc field)
    cp = 0
    for text, compressed in pieces:
        offset = text_start + len(body)
        if compressed:
            body += text.encode("cp1252")
            fc = (offset * 2) | 0x40000000
        else:
            body += text.encode("utf-16-le")
            fc = offset
        descriptors.append((cp, cp + len(text), fc))
        cp += len(text)
    flags = (0x0200 if table_name == "1Table" else 0) | (0x0100 if encrypted else 0) | 0x0004  # fComplex
    fib_base = struct.pack("<HHHHHHHIBBHHII", 0xA5EC, 0x00C1, 0, 0x042A, 0, flags, 0x00BF, 0, 0, 0, 0, 0, 0, 0)
    assert len(fib_base) == 0x20
    rg_w = bytes(28)
    rg_lw = struct.pack("<22I", text_start + len(body), 0, 0, cp, *([0] * 18))
    fc_lcb = [0] * (0x5D * 2)
    # The Clx: one Prc (a property modifier the reader must skip), then the piece table.
    plc = struct.pack(f"<{len(descriptors) + 1}I", *[start for start, _, _ in descriptors], cp)
    plc += b"".join(struct.pack("<HIH", 0, fc, 0) for _, _, fc in descriptors)
    clx = b"\x01" + struct.pack("<h", 4) + b"\x00\x08\x01\x00" + b"\x02" + struct.pack("<I", len(plc)) + plc
    table_stream = bytes(0x40) + clx
    fc_lcb[33 * 2], fc_lcb[33 * 2 + 1] = 0x40, len(clx)
    fib = (fib_base + struct.pack("<H", 14) + rg_w + struct.pack("<H", 22) + rg_lw + struct.pack("<H", 0x5D)
           + struct.pack(f"<{len(fc_lcb)}I", *fc_lcb))
    document = fib.ljust(text_start, b"\0") + bytes(body)
    document = document.ljust(max(4096, -(-len(document) // SECTOR) * SECTOR), b"\0")
    streams = {"WordDocument": document, table_name: table_stream.ljust(4096, b"\0"),
               "\x01CompObj": b"\x01\x00\xfe\xff\x03\x0a\x00\x00" + bytes(60)}
    streams.update(extra_streams or {})
    return cfb(streams)


def word6(text: str, *, fast_saved: bool = False) -> bytes:
    """A Word 6/95 document: 8-bit text between fcMin and fcMac."""
    data = text.encode("latin-1")
    fc_min = 0x300
    flags = 0x0004 if fast_saved else 0
    header = struct.pack("<HHHHHHHIBBHHII", 0xA5EC, 0x0065, 0, 0x042A, 0, flags, 0x0065, 0, 0, 0, 0, 0,
                         fc_min, fc_min + len(data))
    document = (header.ljust(fc_min, b"\0") + data).ljust(4096, b"\0")
    return cfb({"WordDocument": document})


def excel97_encrypted() -> bytes:
    """A BIFF8 workbook stream: BOF, then FILEPASS (XOR obfuscation), as Excel writes it."""
    bof = struct.pack("<HH", 0x0809, 16) + struct.pack("<HHHHII", 0x0600, 0x0005, 0x2775, 0x07CD, 0, 0x0206)
    filepass = struct.pack("<HH", 0x002F, 6) + struct.pack("<HHH", 0, 0x1234, 0xABCD)
    eof = struct.pack("<HH", 0x000A, 0)
    return cfb({"Workbook": (bof + filepass + eof).ljust(4096, b"\0")})
