"""The policy's PDF text reader (qnprov/policy/pdf.py, PyMuPDF) against pypdf, a pure-Python parser.

pdf.py reads PDF text through PyMuPDF (MuPDF, C) and says why: it is much faster than a
pure-Python parser. This measures that claim in CPU seconds per document (median over
``--rounds``, the readers taking turns each round) on PDFs written the way word processors
write them (PyMuPDF with an embedded, subsetted DejaVu font, Vietnamese text): one page
and twelve pages of 40 lines.

Ours is the path the milter runs (``inspect_pdf``: text of every page, plus annotations,
form fields and metadata). The reference is what a user would otherwise run with pypdf:
``PdfReader``, then ``extract_text()`` on every page, plus the metadata, which is less
work than ours. Each reader's text is checked for the expected lines (spaces ignored).

Goal (issue 16): pypdf / ours >= 10 in CPU time on each file.

    .venv/bin/python benchmarks/pdf_reader.py [--rounds 30] [--json]
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "policy"))

import pymupdf
from goals import Goal, median_cpu_seconds, reader_main
from policy_corpus import FONT
from pypdf import PdfReader

from qnprov.policy.extract_types import Budget, Extraction
from qnprov.policy.models import Limits
from qnprov.policy.pdf import inspect_pdf

GOAL_RATIO = 10.0
LINE = "Dòng {n}: Sở Nội vụ đề nghị các đơn vị cập nhật kết quả thực hiện Kế hoạch số {n}/KH-UBND."

Reader = Callable[[bytes], str]


def sample(pages: int) -> tuple[bytes, list[str]]:
    document = pymupdf.open()
    for page_number in range(pages):
        page = document.new_page()
        for line in range(40):
            page.insert_text((50, 60 + 18 * line), LINE.format(n=page_number * 40 + line), fontsize=10,
                             fontname="dejavu", fontfile=str(FONT))
    document.set_metadata({"title": "Báo cáo cập nhật", "subject": "Kế hoạch năm 2026"})
    document.subset_fonts()
    data = bytes(document.tobytes(garbage=3, deflate=True))
    document.close()
    return data, [LINE.format(n=0), LINE.format(n=pages * 40 - 1), "Báo cáo cập nhật"]


def ours(data: bytes) -> str:
    out = Extraction()
    inspect_pdf(data, "a.pdf", Budget(Limits()), out)
    assert not out.problems, out.problems
    return "\n".join(segment.text for segment in out.segments)


# pypdf warns (through logging, on stderr) about each 5-digit entry in the ToUnicode maps
# MuPDF writes, then reads the text right anyway; printing the warnings would be counted
# against pypdf, so they are off, as a user who read these files in bulk would turn them off.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def with_pypdf(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    texts = [page.extract_text() for page in reader.pages]
    metadata: Any = reader.metadata or {}
    texts.extend(str(metadata.get(key) or "") for key in ("/Title", "/Subject", "/Keywords"))
    return "\n".join(texts)


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def run(rounds: int) -> dict[str, object]:
    readers: dict[str, Reader] = {"qnprov (PyMuPDF)": ours, "pypdf": with_pypdf}
    rows: dict[str, object] = {}
    goals = []
    for pages in (1, 12):
        data, expected = sample(pages)
        seconds = median_cpu_seconds(readers, data, rounds)
        readings: dict[str, dict[str, Any]] = {}
        for name, read in readers.items():
            text = _squeezed(read(data))
            readings[name] = {"cpu_ms": round(seconds[name] * 1000, 3),
                              "missing": [want for want in expected if _squeezed(want) not in text]}
        ratio = round(seconds["pypdf"] / seconds["qnprov (PyMuPDF)"], 2)
        name = f"{pages}-page PDF"
        rows[name] = {"bytes": len(data), "readers": readings, "ratio_pypdf_to_qnprov": ratio}
        goals.append(Goal(f"{name}: pypdf / qnprov CPU time", ratio, GOAL_RATIO, at_most=False))
        goals.append(Goal(f"{name}: expected lines qnprov misses", len(readings["qnprov (PyMuPDF)"]["missing"]), 0))
    return {"rounds": rounds, "rows": rows, "goals": goals}


def main() -> int:
    return reader_main(__doc__.split("\n", 1)[0], run, 30)


if __name__ == "__main__":
    sys.exit(main())
