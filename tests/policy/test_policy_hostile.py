"""Hostile input: every case ends in a defined verdict, within bounded time and memory."""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from policy_corpus import docx, encrypted_zip, message, nested_zip, pdf, zip_bomb

from qnprov.policy.engine import Decision, Envelope, PolicyEngine

ENGINE = PolicyEngine.load()
ENVELOPE = Envelope("chuyenvien@quangninh.gov.vn", ("vanthu@quangninh.gov.vn",),
                    authenticated_user="chuyenvien@quangninh.gov.vn")
TIME_LIMIT_S = 5.0
MEMORY_LIMIT = 64 * 2**20  # Python-heap peak while evaluating, beyond the input itself


def bounded(raw: bytes) -> Decision:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        decision = ENGINE.evaluate(raw, ENVELOPE)
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.2f}s"
    assert peak < MEMORY_LIMIT + 4 * len(raw), f"peak {peak / 2**20:.0f} MiB"
    return decision


def uninspectable(decision: Decision) -> list[str]:
    return [f.evidence for f in decision.findings if f.rule == "classified-uninspectable"]


def test_zip_bomb_1gib_to_1mib_is_held_without_expanding() -> None:
    bomb = zip_bomb(1024)
    assert len(bomb) < 2 * 2**20
    decision = bounded(message(attachments=[("bao-cao.zip", "application/zip", bomb)]))
    assert decision.verdict == "quarantine"
    [evidence] = uninspectable(decision)
    assert "1073741824 bytes" in evidence
    assert ("X-QN-Policy", f"quarantine; version={ENGINE.version}; rules=classified-uninspectable (1.3(1))") in \
        decision.add_headers


def test_zip_bomb_lying_about_its_size_is_cut_at_the_read_cap() -> None:
    bomb = bytearray(zip_bomb(64))
    # Claim 1 KiB uncompressed in both headers: the reader must not believe it.
    local_size_at = 22
    bomb[local_size_at:local_size_at + 4] = struct.pack("<I", 1024)
    central = bomb.find(b"PK\x01\x02")
    bomb[central + 24:central + 28] = struct.pack("<I", 1024)
    decision = bounded(message(attachments=[("x.zip", "application/zip", bytes(bomb))]))
    assert decision.verdict == "quarantine"
    assert uninspectable(decision)


def test_twenty_levels_of_nesting_stop_at_the_depth_limit() -> None:
    deep = nested_zip("cv.docx", docx(textbox="MẬT"), 20)
    decision = bounded(message(attachments=[("deep.zip", "application/zip", deep)]))
    assert decision.verdict == "quarantine"
    assert any("nesting deeper" in evidence for evidence in uninspectable(decision))


def test_twenty_nested_messages_stop_at_the_depth_limit() -> None:
    raw = message(subject="lá", body="x")
    for level in range(20):
        raw = message(subject=f"Fwd {level}", attachments=[("fwd.eml", "message/rfc822", raw)])
    decision = bounded(raw)
    assert decision.verdict == "quarantine"
    assert any("nesting deeper" in evidence for evidence in uninspectable(decision))


def _many_parts(count: int) -> bytes:
    boundary = b"b0undary"
    parts = b"".join(
        b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % index for index in range(count)
    )
    return (b"From: a@gmail.com\r\nTo: vanthu@quangninh.gov.vn\r\nSubject: many\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n" + parts + b"--" + boundary + b"--\r\n")


def test_ten_thousand_mime_parts_are_held() -> None:
    decision = bounded(_many_parts(10_000))
    assert decision.verdict == "quarantine"
    assert any("MIME parts" in evidence for evidence in uninspectable(decision))


def test_encrypted_zip_is_held_with_reason() -> None:
    decision = bounded(message(attachments=[("hs.zip", "application/zip", encrypted_zip("cv.docx", b"x" * 100))]))
    assert decision.verdict == "quarantine"
    assert uninspectable(decision) == ["cannot be inspected: encrypted archive cannot be inspected"]


def test_encrypted_pdf_is_held_with_reason() -> None:
    decision = bounded(message(attachments=[("qd.pdf", "application/pdf", pdf(["TỐI MẬT"], encrypt=True))]))
    assert decision.verdict == "quarantine"
    assert uninspectable(decision) == ["cannot be inspected: encrypted PDF cannot be inspected"]


def test_rar_archive_is_held_as_uninspectable() -> None:
    rar = b"Rar!\x1a\x07\x01\x00" + bytes(64)
    decision = bounded(message(attachments=[("a.rar", "application/octet-stream", rar)]))
    assert decision.verdict == "quarantine"


def test_corrupt_pdf_and_zip_are_held() -> None:
    broken_pdf = b"%PDF-1.7\n" + bytes(range(256)) * 4
    broken_zip = b"PK\x03\x04" + bytes(200)
    decision = bounded(message(attachments=[("a.pdf", "application/pdf", broken_pdf),
                                            ("b.zip", "application/zip", broken_zip)]))
    assert decision.verdict == "quarantine"
    assert len(uninspectable(decision)) == 2


def _malformed() -> Iterator[tuple[str, bytes]]:
    head = b"From: a@gmail.com\r\nTo: vanthu@quangninh.gov.vn\r\nMIME-Version: 1.0\r\n"
    yield "no-closing-boundary", head + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhello\r\n"
    yield "undeclared-boundary", head + b"Content-Type: multipart/mixed\r\n\r\n--x\r\nhello\r\n--x--\r\n"
    yield "bad-base64", head + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!@@@###\r\n"
    yield "unknown-charset", head + b"Content-Type: text/plain; charset=x-no-such\r\n\r\n\xff\xfe M\xe1\xba\xacT\r\n"
    yield "garbage", bytes(range(256)) * 64
    yield "empty", b""
    yield "header-only", head
    yield "bad-encoded-word", head + b"Subject: =?utf-8?q?=ZZ=?= =?bogus?b?////?=\r\n\r\nx"
    yield "raw-8bit-subject", head + "Subject: TỐI MẬT\r\n\r\nx".encode()
    yield "huge-header-line", head + b"X-Long: " + b"a" * 500_000 + b"\r\n\r\nx"
    yield "nul-bytes", head + b"Content-Type: text/plain\r\n\r\n\x00\x00M\xe1\xba\xacT\x00"


@pytest.mark.parametrize(("name", "raw"), list(_malformed()), ids=[name for name, _ in _malformed()])
def test_malformed_mime_gets_a_defined_verdict(name: str, raw: bytes) -> None:
    decision = bounded(raw)
    assert decision.verdict in {"accept", "tag", "quarantine", "reject"}
    assert not any(f.rule == "engine-failure" for f in decision.findings)


def test_raw_8bit_marked_subject_is_still_found() -> None:
    raw = b"From: a@gmail.com\r\nTo: vanthu@quangninh.gov.vn\r\n" + "Subject: TỐI MẬT\r\n\r\nx".encode()
    assert bounded(raw).verdict == "reject"


def test_wall_clock_limit_gives_uninspectable(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text("limits:\n  max_wall_seconds: 0.000001\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    decision = engine.evaluate(message(attachments=[("a.docx", "application/octet-stream", docx())]), ENVELOPE)
    assert decision.verdict == "quarantine"
    assert any("longer than" in f.evidence for f in decision.findings)


def test_engine_bug_becomes_the_configured_failure_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    import qnprov.policy.engine as engine_module

    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine_module, "extract", explode)
    decision = ENGINE.evaluate(message(), ENVELOPE)
    assert decision.verdict == "tempfail"
    assert decision.reply is not None and decision.reply[:2] == ("451", "4.7.1")
    assert decision.findings[0].rule == "engine-failure"


def test_oversized_message_is_held_without_parsing_content(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text("limits:\n  max_message_bytes: 1000\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    decision = engine.evaluate(message(body="x" * 5000), ENVELOPE)
    assert decision.verdict == "quarantine"


def _tokens(token: str, count: int) -> str:
    """``token`` repeated with random filler, so the zip ratio check does not catch it first."""
    import random
    import string

    rng = random.Random(7)
    return "".join(token + "".join(rng.choices(string.ascii_letters, k=6)) for _ in range(count))


_FLOOD_COUNT = 50_000
_OFFICE_FLOODS = {  # name -> (which file, which part, repeated token)
    "docx-unclosed-runs": ("docx", "word/header9.xml", "<w:r><w:caps/>"),
    "docx-unclosed-fields": ("docx", "word/header9.xml", "<w:instrText>"),
    "docx-unclosed-pi": ("docx", "word/header9.xml", "<?"),
    "docx-unclosed-tags": ("docx", "word/header9.xml", "<a"),
    "xlsx-unclosed-si": ("xlsx", "xl/sharedStrings.xml", "<si>"),
    "xlsx-unclosed-rows": ("xlsx", "xl/worksheets/sheet2.xml", "<row><c>"),
    "docx-unclosed-properties": ("docx", "docProps/custom.xml", '<property name="a">'),
}
FLOODS = ["html-unclosed-script", "html-unclosed-tags", *_OFFICE_FLOODS, "subject-encoded-word-flood"]


def _flood(name: str) -> bytes:
    """Built on demand (not at collection time): each is a few MB."""
    from policy_corpus import with_zip_entry, xlsx

    if name == "html-unclosed-script":
        return message(html=_tokens("<script", _FLOOD_COUNT))
    if name == "html-unclosed-tags":
        return message(html=_tokens("<p", _FLOOD_COUNT))
    if name == "subject-encoded-word-flood":
        return message(subject="=?a?b?" * 20_000)
    kind, entry, token = _OFFICE_FLOODS[name]
    base = docx() if kind == "docx" else xlsx([["x"]])
    part = with_zip_entry(base, entry, _tokens(token, _FLOOD_COUNT))
    return message(attachments=[(f"a.{kind}", "application/octet-stream", part)])


@pytest.mark.parametrize("name", FLOODS)
def test_unclosed_markup_floods_stay_linear(name: str) -> None:
    raw = _flood(name)
    # The earlier ".*?" patterns took minutes on these inputs (quadratic); linear code takes well under 1 s.
    started = time.perf_counter()
    decision = ENGINE.evaluate(raw, ENVELOPE)
    assert time.perf_counter() - started < 2.0
    assert decision.verdict == "accept", decision.findings


def test_huge_central_directory_is_refused_before_parsing() -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(20_000):
            archive.writestr(f"{index}", b"")
    decision = bounded(message(attachments=[("many.zip", "application/zip", buffer.getvalue())]))
    assert decision.verdict == "quarantine"
    assert uninspectable(decision) == ["cannot be inspected: archive declares 20000 entries (limit 500)"]


def test_file_count_across_nested_archives_is_capped() -> None:
    from policy_corpus import zip_of

    inner = zip_of({f"f{index}.txt": b"x" for index in range(400)})
    outer = zip_of({f"inner{index}.zip": inner for index in range(8)})
    decision = bounded(message(attachments=[("nested.zip", "application/zip", outer)]))
    assert decision.verdict == "quarantine"
    assert any("files in archives" in evidence for evidence in uninspectable(decision))


def test_whole_hostile_corpus_peak_rss_is_bounded(tmp_path: object) -> None:
    """tracemalloc misses C allocations (PyMuPDF, zlib); measure the process's real peak RSS."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    corpus = {
        "bomb": message(attachments=[("b.zip", "application/zip", zip_bomb(1024))]),
        "deep": message(attachments=[("d.zip", "application/zip", nested_zip("a.docx", docx(textbox="MẬT"), 20))]),
        "parts": _many_parts(10_000),
        "enc-zip": message(attachments=[("e.zip", "application/zip", encrypted_zip("a", b"x"))]),
        "enc-pdf": message(attachments=[("e.pdf", "application/pdf", pdf(["MẬT"], encrypt=True))]),
        "pdf": message(attachments=[("p.pdf", "application/pdf", pdf(["TỐI MẬT"] * 40))]),
    }
    for name, raw in corpus.items():
        (tmp_path / f"{name}.eml").write_bytes(raw)
    # VmHWM is this process's own peak RSS (ru_maxrss would include the forking parent's).
    child = (
        "import json, sys, pathlib\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "from qnprov.policy.engine import Envelope, PolicyEngine\n"
        "import pymupdf\n"
        "engine = PolicyEngine.load()\n"
        "base = hwm()\n"
        "envelope = Envelope('a@gmail.com', ('vanthu@quangninh.gov.vn',))\n"
        "verdicts = {p.stem: engine.evaluate(p.read_bytes(), envelope).verdict\n"
        "            for p in sorted(pathlib.Path(sys.argv[1]).glob('*.eml'))}\n"
        "print(json.dumps({'verdicts': verdicts, 'base_kib': base, 'peak_kib': hwm()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report["verdicts"] == {"bomb": "quarantine", "deep": "quarantine", "enc-pdf": "quarantine",
                                  "enc-zip": "quarantine", "parts": "quarantine", "pdf": "reject"}
    # Inputs total a few MiB; the peak grows by about 5 MiB (measured), nowhere near the 1 GiB bomb.
    assert report["peak_kib"] - report["base_kib"] < 64 * 1024, report


@pytest.mark.parametrize("levels", [20, 3000])
def test_deeply_nested_multiparts_are_held(levels: int) -> None:
    head = b"From: a@gmail.com\r\nTo: vanthu@quangninh.gov.vn\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    body = b"Content-Type: text/plain\r\n\r\nTUYET MAT\r\n"
    for level in range(levels):
        boundary = b"b%d" % level
        body = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n--" + boundary + b"\r\n" + body
                + b"\r\n--" + boundary + b"--\r\n")
    decision = bounded(head + body)
    assert decision.verdict == "quarantine"
    assert any("nesting deeper" in evidence for evidence in uninspectable(decision))


def test_pdf_over_the_page_limit_is_held() -> None:
    import pymupdf

    document = pymupdf.open()
    for _ in range(600):
        document.new_page()
    data = bytes(document.tobytes())
    document.close()
    decision = bounded(message(attachments=[("big.pdf", "application/pdf", data)]))
    assert decision.verdict == "quarantine"
    assert uninspectable(decision) == ["cannot be inspected: PDF has 600 pages (limit 500)"]


def test_wall_clock_is_checked_inside_one_huge_xml_part(tmp_path: object) -> None:
    from pathlib import Path

    from policy_corpus import with_zip_entry

    assert isinstance(tmp_path, Path)
    overrides = tmp_path / "o.yml"
    overrides.write_text("limits:\n  max_wall_seconds: 0.2\n", encoding="utf-8")
    engine = PolicyEngine.load(overrides_path=overrides)
    letters = "abcdefghijklmnopqrstuvwxyz"
    # ~800,000 tags in one part: about 2 s of lexing, far beyond the 0.2 s budget.
    xml = "mật" + "".join(f"{letters[i % 26]}{letters[i % 7]}<a/>" for i in range(800_000))
    raw = message(attachments=[("a.docx", "application/octet-stream",
                                with_zip_entry(docx(), "word/header9.xml", xml))])
    started = time.perf_counter()
    decision = engine.evaluate(raw, ENVELOPE)
    assert time.perf_counter() - started < 1.0
    assert decision.verdict == "quarantine"
    assert any("longer than 0.2 s" in f.evidence for f in decision.findings)
