"""Office 97-2003 and password-protected Office files (issue 9, item 4).

* Password-protected OOXML is written by msoffcrypto-tool (the compound file Office writes).
* Word 97 and Word 6 documents come from tests/policy/legacy_corpus.py (no library writes
  .doc); olefile and msoffcrypto-tool read them back here, so the writer is checked by
  independent readers.
* TCVN3 and VNI texts are typed as those encodings' byte strings, not produced by the code
  under test.
"""

from __future__ import annotations

import io
import struct

import msoffcrypto
import olefile
import pytest
from legacy_corpus import cfb, excel97_encrypted, word6, word97
from msoffcrypto.format.ooxml import OOXMLFile
from policy_corpus import docx, message, xlsx

from qnprov.policy.engine import Decision, Envelope, PolicyEngine
from qnprov.policy.legacy import CompoundFile, CompoundFileError, clean_word_text
from qnprov.policy.vnfonts import decode_tcvn3, decode_vni

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")


def decide(name: str, data: bytes) -> Decision:
    return ENGINE.evaluate(message(attachments=[(name, "application/msword", data)]), ENVELOPE)


def markings(decision: Decision) -> list[tuple[str, str]]:
    return [(f.location, f.evidence) for f in decision.findings if f.rule == "classified-marking"]


def uninspectable(decision: Decision) -> list[str]:
    return [f.evidence for f in decision.findings if f.rule == "classified-uninspectable"]


TEST_PASSWORD = "123456"  # the test file's own password


def encrypt(ooxml: bytes) -> bytes:
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(ooxml)).encrypt(TEST_PASSWORD, out)
    return out.getvalue()


# -- password-protected OOXML --------------------------------------------------------------


@pytest.mark.parametrize(("name", "build"), [
    ("to-trinh.docx", lambda: docx(body="Số: 12/TTr-STTTT\nTỐI MẬT")),
    ("bang.xlsx", lambda: xlsx([["Độ mật", "Mật"]])),
    ("khong-mat.docx", lambda: docx(body="Báo cáo tuần")),  # unmarked: still unreadable, still held
])
def test_password_protected_ooxml_is_held(name: str, build: object) -> None:
    assert callable(build)
    data = encrypt(build())
    assert data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    names = {"/".join(path) for path in olefile.OleFileIO(io.BytesIO(data)).listdir()}
    assert {"EncryptionInfo", "EncryptedPackage"} <= names
    decision = decide(name, data)
    assert decision.verdict == "quarantine", decision.findings
    assert uninspectable(decision) == [
        "cannot be inspected: password-protected Office document (encrypted OOXML package)"]


def test_cfb_reader_agrees_with_olefile_on_an_encrypted_package() -> None:
    data = encrypt(docx(body="x"))
    reference = olefile.OleFileIO(io.BytesIO(data))
    ours = CompoundFile(data)
    streams = ours.streams()
    assert set(streams) == {"/".join(path) for path in reference.listdir()}
    for path in streams:
        assert ours.read(path, 1 << 30) == reference.openstream(path).read(), path
    assert ours.streams()["EncryptionInfo"].size < 4096  # so the mini stream was exercised


# -- Word 97-2003 ---------------------------------------------------------------------------


# id -> (pieces of a marked document, pieces of its look-alike twin)
WORD_CASES = {
    "unicode-utf16": ([("Số: 12/BC-UBND\r", False), ("TỐI MẬT\r", False), ("Kính gửi: ...\r", False)],
                      [("Số: 12/BC-UBND\r", False), ("Đổi mật khẩu\r", False)]),
    "tcvn3-caps-stamp-8bit": ([("Sè: 12/BC-UBND\r", True), ("TUYÖT MËT\r", True), ("KÝnh göi: ...\r", True)],
                              [("Sè: 12/BC-UBND\r", True), ("B¶O MËT TH¤NG TIN\r", True)]),
    "tcvn3-utf16-pieces": ([("UBND TØNH QU¶NG NINH\r", False), ("TèI MËT\r", False)],
                           [("UBND TØNH QU¶NG NINH\r", False), ("MËT §é D¢N Sè\r", False)]),
    "tcvn3-metadata": ([("§é mËt: Tèi mËt\r", True)], [("§é khÈn: Khèn\r", True)]),
    "tcvn3-in-a-table-cell": ([("Sè: 7/KH\x07TUYÖT MËT\x07\x07\r", True)], [("Sè: 7/KH\x07THÂN MËT\x07\x07\r", True)]),
    "vni-stamp": ([("Soá: 12/BC-UBND\r", True), ("TUYEÄT MAÄT\r", True)],
                  [("Soá: 12/BC-UBND\r", True), ("BAÛO MAÄT\r", True)]),
    "vni-metadata": ([("Ñoä maät: Toái maät\r", True)], [("Ñoåi maät khaåu\r", True)]),
    "field-result": ([("\x13 QUOTE \"x\" \x14TUYỆT MẬT\x15\r", False)],
                     [("\x13 QUOTE \"MẬT\" \x14Bảo mật\x15\r", False)]),
    "many-pieces": ([("Số: ", False), ("1/QD-UBND\r", True), ("MẬ", False), ("T\r", True)],
                    [("Số: ", False), ("1/QD-UBND\r", True), ("MẬT ", False), ("KHẨU\r", False)]),
}


@pytest.mark.parametrize("case", sorted(WORD_CASES))
def test_word97_marking_is_found(case: str) -> None:
    data = word97(WORD_CASES[case][0])
    decision = decide("cu.doc", data)
    assert decision.verdict == "reject", decision.findings
    assert [location for location, _ in markings(decision)] == ["attachment:cu.doc"]


@pytest.mark.parametrize("case", sorted(WORD_CASES))
def test_word97_lookalike_is_accepted(case: str) -> None:
    decision = decide("cu.doc", word97(WORD_CASES[case][1]))
    assert decision.verdict == "accept", decision.findings
    assert decision.findings == ()


def test_word97_writer_is_read_by_olefile_and_msoffcrypto() -> None:
    data = word97([("TUYÖT MËT\r", True)])
    ole = olefile.OleFileIO(io.BytesIO(data))
    assert sorted("/".join(p) for p in ole.listdir()) == ["\x01CompObj", "1Table", "WordDocument"]
    assert ole.openstream("WordDocument").read()[:2] == b"\xec\xa5"
    assert msoffcrypto.OfficeFile(io.BytesIO(data)).is_encrypted() is False
    assert msoffcrypto.OfficeFile(io.BytesIO(word97([("x\r", True)], encrypted=True))).is_encrypted() is True
    assert msoffcrypto.OfficeFile(io.BytesIO(excel97_encrypted())).is_encrypted() is True


def test_word97_table_stream_0table() -> None:
    decision = decide("cu.doc", word97([("MẬT\r", False)], table_name="0Table"))
    assert decision.verdict == "reject"


def _corrupt_fat_loop() -> bytes:
    data = bytearray(word97([("Báo cáo tuần\r", False)]))
    # Point the WordDocument chain's second sector back at its first: a loop.
    ole = olefile.OleFileIO(io.BytesIO(bytes(data)))
    start = ole.direntries[ole._find("WordDocument")].isectStart
    (fat_sector,) = struct.unpack_from("<I", data, 0x4C)
    position = 512 + fat_sector * 512 + (start + 1) * 4
    data[position:position + 4] = struct.pack("<I", start)
    return bytes(data)


# id -> (data, words of the reason)
UNREADABLE = {
    "word97-encrypted": (lambda: word97([("TỐI MẬT\r", False)], encrypted=True), "password-protected Word"),
    "excel97-encrypted": (excel97_encrypted, "password-protected Excel"),
    "powerpoint97-encrypted": (lambda: cfb({"PowerPoint Document": bytes(4096), "EncryptedSummary": bytes(200)}),
                               "password-protected PowerPoint"),
    "word6-fast-saved": (lambda: word6("TèI MËT\r", fast_saved=True), "fast-saved Word 6/95"),
    "truncated": (lambda: word97([("Báo cáo\r", False)])[:1500], "unreadable Office 97-2003 file"),
    "fat-loop": (_corrupt_fat_loop, "unreadable Office 97-2003 file"),
    "piece-outside-stream": (
        lambda: word97([("x" * 10 + "\r", True)]).replace(struct.pack("<I", (0x800 * 2) | 0x40000000),
                                                           struct.pack("<I", (0x7F000 * 2) | 0x40000000)),
        "text piece is outside"),
    "no-word-header": (lambda: cfb({"WordDocument": bytes(4096), "1Table": bytes(4096)}), "no Word file header"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_legacy_office_file_is_held(case: str) -> None:
    build, words = UNREADABLE[case]
    decision = decide("cu.doc", build())
    assert decision.verdict == "quarantine", decision.findings
    [evidence] = uninspectable(decision)
    assert words in evidence, evidence


def test_word6_text_in_tcvn3_is_read() -> None:
    assert decide("cu.doc", word6("UBND TØNH QU¶NG NINH\rTèI MËT\r")).verdict == "reject"
    assert decide("cu.doc", word6("UBND TØNH QU¶NG NINH\rB¶o mËt th«ng tin\r")).verdict == "accept"


def test_old_rtf_in_a_tcvn3_font_is_read() -> None:
    rtf = rb"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 .VnTimeH;}}\f0 TUY\'d6T M\'cbT\par}"
    assert decide("cv.rtf", rtf).verdict == "reject"
    assert decide("cv.rtf", rtf.replace(rb"TUY\'d6T M\'cbT", rb"B\'b6O M\'cbT")).verdict == "accept"


def test_unencrypted_workbook_stream_is_not_called_encrypted() -> None:
    bof = struct.pack("<HH", 0x0809, 16) + bytes(16)
    data = cfb({"Workbook": (bof + struct.pack("<HH", 0x000A, 0)).ljust(4096, b"\0")})
    assert decide("a.xls", data).verdict == "accept"


def test_corrupt_container_with_visible_marking_still_rejects() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "\rTỐI MẬT\r".encode("utf-16-le") + bytes(64)
    decision = decide("cu.doc", ole)
    assert decision.verdict == "reject"
    assert uninspectable(decision)  # and it is reported as unreadable as well


# -- the decoders on public reference strings ------------------------------------------------


@pytest.mark.parametrize(("tcvn3", "unicode"), [
    ("B¶o Th¾ng", "Bảo Thắng"),
    ("M\xadêng Kh\xad¬ng", "Mường Khương"),
    ("Ninh B×nh", "Ninh Bình"),
    ("§é mËt: Tèi mËt", "Độ mật: Tối mật"),
    ("TUYÖT MËT", "TUYỆT MẬT"),  # capitals typed in a .VnTimeH font
    ("Sè: 12/BC", "Số: 12/BC"),  # "S" is a capital, "è" a lower-case toned vowel, "12" no letter
    ("mËt khÈu", "mật khẩu"),
])
def test_tcvn3(tcvn3: str, unicode: str) -> None:
    assert decode_tcvn3(tcvn3) == unicode


@pytest.mark.parametrize(("vni", "unicode"), [
    ("Xin chaøo caùc baïn", "Xin chào các bạn"),
    ("tieáng Vieät", "tiếng Việt"),
    ("COÄNG HOØA XAÕ HOÄI CHUÛ NGHÓA VIEÄT NAM", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"),
    ("Möôøng Khöông", "Mường Khương"),
    ("ñaëc bieät", "đặc biệt"),
])
def test_vni(vni: str, unicode: str) -> None:
    assert decode_vni(vni) == unicode


def test_word_field_instructions_are_dropped_and_marks_mapped() -> None:
    text = "A\x13 HYPERLINK \"x\" \x13 REF y \x14inner\x15\x14shown\x15B\x07C\r"
    assert clean_word_text(text) == "Ashown" + "B\tC\n"


def test_cfb_header_checks() -> None:
    with pytest.raises(CompoundFileError):
        CompoundFile(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
