"""Clause 1.3(1) inside tar archives and gzip/bzip2/xz wrappers (issue 9, item 4).

Every archive is written by tarfile, gzip, bz2 or lzma; hostile ones are those outputs
cut, bloated or patched. Whatever cannot be read completely is held, never accepted.
"""

from __future__ import annotations

import tarfile

import pytest
from archive_corpus import COMPRESS, tar_of, v7_tar, xz_with_dictionary, zeros_bomb
from policy_corpus import docx, message, pdf, xlsx, zip_of

from qnprov.policy.archives import XZ_MEMORY_LIMIT, inner_name, looks_like_tar
from qnprov.policy.engine import Decision, Envelope, PolicyEngine

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")
LOOKALIKE = "Đổi mật khẩu; BẢO MẬT thông tin; mật độ dân số"


def decide(name: str, data: bytes) -> Decision:
    return ENGINE.evaluate(message(attachments=[(name, "application/octet-stream", data)]), ENVELOPE)


def markings(decision: Decision) -> list[str]:
    return [f.location for f in decision.findings if f.rule == "classified-marking"]


def uninspectable(decision: Decision) -> list[tuple[str, str]]:
    return [(f.location, f.evidence) for f in decision.findings if f.rule == "classified-uninspectable"]


def dossier(marked: bool) -> dict[str, bytes]:
    return {
        "hoso/to-trinh.docx": docx(textbox="TỐI MẬT" if marked else "THÂN MẬT"),
        "hoso/ghi-chu.txt": "Ghi chú: nộp trước 30/11.\n".encode(),
    }


# id -> (file name, builder(marked) -> bytes, location of the marked member)
CASES = {
    "tar": ("hoso.tar", lambda m: tar_of(dossier(m)), "hoso.tar/hoso/to-trinh.docx"),
    "tar-gnu-format": ("hoso.tar", lambda m: tar_of(dossier(m), fmt=tarfile.GNU_FORMAT),
                       "hoso.tar/hoso/to-trinh.docx"),
    "tar-v7-no-magic": ("hoso.tar", lambda m: v7_tar(dossier(m)), "hoso.tar/hoso/to-trinh.docx"),
    "tar.gz": ("hoso.tar.gz", lambda m: tar_of(dossier(m), compression="gz"),
               "hoso.tar.gz/hoso.tar/hoso/to-trinh.docx"),
    "tgz": ("hoso.tgz", lambda m: tar_of(dossier(m), compression="gz"), "hoso.tgz/hoso.tar/hoso/to-trinh.docx"),
    "tar.bz2": ("hoso.tar.bz2", lambda m: tar_of(dossier(m), compression="bz2"),
                "hoso.tar.bz2/hoso.tar/hoso/to-trinh.docx"),
    "tar.xz": ("hoso.tar.xz", lambda m: tar_of(dossier(m), compression="xz"),
               "hoso.tar.xz/hoso.tar/hoso/to-trinh.docx"),
    "bz2-pdf": ("qd.pdf.bz2", lambda m: COMPRESS["bz2"](pdf(["Số: 1/QĐ-UBND", "TUYỆT MẬT" if m else "BẢO MẬT"])),
                "qd.pdf.bz2/qd.pdf"),
    "xz-xlsx": ("bang.xlsx.xz", lambda m: COMPRESS["xz"](xlsx([["Độ mật", "Mật" if m else "Thường"]])),
                "bang.xlsx.xz/bang.xlsx"),
    "gz-concatenated-members": (
        "ghichu.txt.gz", lambda m: COMPRESS["gz"]("Phần 1\n".encode()) + COMPRESS["gz"](
            ("TỐI MẬT\n" if m else LOOKALIKE).encode()), "ghichu.txt.gz/ghichu.txt"),
    "bz2-concatenated-streams": (
        "ghichu.txt.bz2", lambda m: COMPRESS["bz2"](b"part 1\n") + COMPRESS["bz2"](
            ("Độ mật: Tối mật\n" if m else LOOKALIKE).encode()), "ghichu.txt.bz2/ghichu.txt"),
    "tar-in-zip-in-tar.gz": (
        "goi.tar.gz", lambda m: tar_of({"goi/ho-so.zip": zip_of({"ds.tar": tar_of(dossier(m))})}, compression="gz"),
        "goi.tar.gz/goi.tar/goi/ho-so.zip/ds.tar/hoso/to-trinh.docx"),
    "tar.gz-wrong-name": ("SCAN0001.JPG", lambda m: tar_of(dossier(m), compression="gz"),
                          "SCAN0001.JPG/SCAN0001.JPG.gzip-content/hoso/to-trinh.docx"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_marking_inside_an_archive_is_found(case: str) -> None:
    name, build, location = CASES[case]
    decision = decide(name, build(True))
    assert decision.verdict == "reject", decision.findings
    [found] = markings(decision)
    assert found == f"attachment:{location}" or found.startswith(f"attachment:{location}/"), found


@pytest.mark.parametrize("case", sorted(CASES))
def test_lookalike_inside_an_archive_is_accepted(case: str) -> None:
    name, build, _ = CASES[case]
    decision = decide(name, build(False))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


def _damaged_second_header() -> bytes:
    """tarfile stops without error at a bad header after the first: the marked file hides there."""
    data = bytearray(tar_of({"a.txt": b"x" * 10, "b.txt": "TỐI MẬT\n".encode()}, directories=(), symlink=False))
    second = 1024  # header, one data block
    assert data[second:second + 5] == b"b.txt"
    data[second + 148:second + 156] = b"0000000\x00"  # wrong checksum
    return bytes(data)


# id -> (file name, data, expected location, words the evidence must contain)
HOSTILE = {
    "gzip-bomb": ("zeros.bin.gz", lambda: zeros_bomb("gz"), "zeros.bin.gz", "gzip data expands beyond"),
    "bzip2-bomb": ("zeros.bin.bz2", lambda: zeros_bomb("bz2"), "zeros.bin.bz2", "bzip2 data expands beyond"),
    "xz-bomb": ("zeros.bin.xz", lambda: zeros_bomb("xz"), "zeros.bin.xz", "xz data expands beyond"),
    "xz-huge-dictionary": ("a.txt.xz", lambda: xz_with_dictionary("TỐI MẬT".encode()), "a.txt.xz",
                           "Memory usage limit"),
    "truncated-gzip": ("hoso.tar.gz", lambda: tar_of(dossier(True), compression="gz")[:-200], "hoso.tar.gz",
                       "truncated gzip data"),
    "truncated-xz": ("hoso.tar.xz", lambda: tar_of(dossier(True), compression="xz")[:-100], "hoso.tar.xz", "xz"),
    "corrupt-bzip2": ("a.txt.bz2", lambda: COMPRESS["bz2"]("TỐI MẬT\n".encode() * 50)[:30] + b"\xff" * 40,
                      "a.txt.bz2", "bzip2"),
    "data-after-gzip": ("a.txt.gz", lambda: COMPRESS["gz"](b"harmless\n") + b"PK\x03\x04 hidden zip",
                        "a.txt.gz", "data after the end of the gzip stream"),
    "tar-too-many-members": ("many.tar", lambda: tar_of({f"f{i}.txt": b"x" for i in range(600)}, directories=(),
                                                        symlink=False),
                             "many.tar", "more than 500 entries"),
    "tar-damaged-second-header": ("hoso.tar", _damaged_second_header, "hoso.tar", "damaged header"),
    "tar-truncated-member": ("hoso.tar", lambda: tar_of({"big.txt": b"TUYET " * 2000}, directories=(),
                                                        symlink=False)[:4096],
                             "hoso.tar", "unreadable tar archive"),
    "zstd": ("a.tar.zst", lambda: b"\x28\xb5\x2f\xfd" + bytes(60), "a.tar.zst", "zstd-compressed data"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_archive_that_cannot_be_read_fully_is_held(case: str) -> None:
    name, build, location, words = HOSTILE[case]
    decision = decide(name, build())
    assert decision.verdict == "quarantine", decision.findings
    [(where, evidence)] = uninspectable(decision)
    assert where == f"attachment:{location}"
    assert words in evidence, evidence


def test_tar_nesting_stops_at_the_depth_limit() -> None:
    data = docx(textbox="MẬT")
    for level in range(12):
        data = tar_of({f"l{level}/inner.bin": data}, compression="gz", directories=(), symlink=False)
    decision = decide("deep.tar.gz", data)
    assert decision.verdict == "quarantine"
    assert any("nesting deeper than 8 levels" in evidence for _, evidence in uninspectable(decision))


def test_file_count_is_shared_across_nested_tars() -> None:
    inner = tar_of({f"f{i}.txt": b"x" for i in range(450)}, directories=(), symlink=False)
    outer = tar_of({f"part{i}.tar": inner for i in range(5)}, compression="gz", directories=(), symlink=False)
    decision = decide("parts.tar.gz", outer)
    assert decision.verdict == "quarantine"
    assert [evidence for _, evidence in uninspectable(decision)] == [
        "cannot be inspected: more than 2000 files in archives"]


def test_xz_memory_limit_is_above_what_xz_9_needs() -> None:
    # xz -9 decodes with a 64 MiB dictionary (+ ~1 MiB); the limit must admit every preset.
    assert XZ_MEMORY_LIMIT > 65 * 2**20
    import lzma

    data = lzma.compress("TỐI MẬT\n".encode(), preset=9 | lzma.PRESET_EXTREME)
    assert markings(decide("a.txt.xz", data)) == ["attachment:a.txt.xz/a.txt"]


@pytest.mark.parametrize(("name", "kind", "inner"), [
    ("a.tar.gz", "gzip", "a.tar"), ("A.TGZ", "gzip", "A.tar"), ("b.tbz2", "bzip2", "b.tar"),
    ("c.txz", "xz", "c.tar"), ("d.docx.xz", "xz", "d.docx"), ("blob", "bzip2", "blob.bzip2-content"),
    (".gz", "gzip", ".gz.gzip-content"),
])
def test_inner_names(name: str, kind: str, inner: str) -> None:
    assert inner_name(name, kind) == inner


def test_tar_sniffing_needs_magic_or_a_valid_checksum() -> None:
    assert looks_like_tar(tar_of({"a": b"x"}))
    assert looks_like_tar(v7_tar({"a": b"x"}))
    assert not looks_like_tar(b"a" * 100 + bytes(412 + 512))  # a name, but no valid checksum
    assert not looks_like_tar(bytes(1024))
