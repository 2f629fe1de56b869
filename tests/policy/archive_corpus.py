"""Tar archives and compressed files, written by tarfile, gzip, bz2 and lzma in memory."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zlib

COMPRESS = {
    "gz": lambda data: gzip.compress(data, mtime=0),
    "bz2": bz2.compress,
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ),
}


def tar_of(entries: dict[str, bytes], *, compression: str = "", fmt: int = tarfile.PAX_FORMAT,
           directories: tuple[str, ...] = ("hoso",), symlink: bool = True) -> bytes:
    """A tar (optionally "gz", "bz2" or "xz" compressed by tarfile itself) with a directory,
    a symlink and the given regular files, as ``tar czf`` would make it."""
    buffer = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=buffer, mode=mode, format=fmt) as archive:  # type: ignore[call-overload]
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_780_000_000
            archive.addfile(info)
        if symlink:
            link = tarfile.TarInfo("hoso/moi-nhat")
            link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
            archive.addfile(link)
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 1_780_000_000
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def v7_tar(entries: dict[str, bytes]) -> bytes:
    """An old (pre-POSIX) tar: a ustar archive with the magic and version blanked and the
    header checksums recomputed, as 'tar --format=v7' writes it."""
    data = bytearray(tar_of(entries, fmt=tarfile.USTAR_FORMAT, directories=(), symlink=False))
    offset = 0
    while offset + 512 <= len(data) and data[offset:offset + 512].strip(b"\x00"):
        header = data[offset:offset + 512]
        header[257:265] = bytes(8)
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\x00 " % sum(header)
        data[offset:offset + 512] = header
        size = int(header[124:136].strip(b"\x00 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    return bytes(data)


def zeros_bomb(kind: str, mib: int = 16) -> bytes:
    return COMPRESS[kind](bytes(mib << 20))


def xz_with_dictionary(data: bytes, dict_code: int = 40) -> bytes:
    """An xz stream whose block header asks for a huge LZMA2 dictionary (code 40: 4 GiB - 1),
    with the header's CRC32 recomputed so only the memory limit can refuse it."""
    stream = bytearray(lzma.compress(data, format=lzma.FORMAT_XZ))
    start = 12  # after the stream header
    size = (stream[start] + 1) * 4
    assert stream[start + 2] == 0x21 and stream[start + 3] == 1, "LZMA2 filter with a one-byte property"
    stream[start + 4] = dict_code
    stream[start + size - 4:start + size] = struct.pack("<I", zlib.crc32(bytes(stream[start:start + size - 4])))
    return bytes(stream)
