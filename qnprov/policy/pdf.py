"""PDF text layer (PyMuPDF) and signature discovery.

PyMuPDF is used because it is about 12x (one page) to 20x (twelve pages) faster in CPU time
than pypdf, a pure-Python parser, reading the same text (benchmarks/pdf_reader.py, figures
in docs/policy.md), and copes with damaged files; it runs in-process, so every call is
bounded by page count and the inspection deadline.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from qnprov.policy.extract_types import Budget, Extraction, Problem, Segment, SignedObject
from qnprov.policy.markings import normalise_text
from qnprov.policy.pdf_lines import looks_fragmented, rebuild_lines

# Bounded repetitions: a hostile file cannot make the search backtrack over long runs.
_BYTE_RANGE = re.compile(rb"/ByteRange\s{0,8}\[\s{0,8}" + rb"\s{1,8}".join([rb"(\d{1,12})"] * 4) + rb"\s{0,8}\]")


_quietened = False

#: Optional add-ons that ``import pymupdf`` loads when they are installed (PyMuPDF 2.0
#: declares both as dependencies, so a plain ``pip install pymupdf`` brings them):
#: ``pymupdf.layout`` activates an ONNX layout model at import (onnxruntime, numpy,
#: their thread pools: ~1.4 s and ~115 MiB per evaluator process) and ``pymupdf4llm``
#: adds Markdown export. The inspector uses neither: ``Page.get_text`` does not consult
#: the layout model (only ``Page.get_layout`` does). The mail host installs PyMuPDF
#: without them (``qnprov_milter_nodeps_requirements``); this makes every install
#: extract the same way with the same footprint.
_UNUSED_PYMUPDF_ADDONS = ("pymupdf.layout", "pymupdf4llm")


def _pymupdf() -> Any:
    """PyMuPDF, imported on first use, with MuPDF's own stderr chatter about damaged files off:
    the damage is reported as a finding, and hostile senders must not be able to flood logs."""
    global _quietened
    if "pymupdf" not in sys.modules:
        for addon in _UNUSED_PYMUPDF_ADDONS:
            # A None entry makes "import pymupdf.layout" raise ImportError, which PyMuPDF catches.
            sys.modules.setdefault(addon, None)  # type: ignore[arg-type]
    import pymupdf

    if not _quietened:
        pymupdf.TOOLS.mupdf_display_errors(False)
        pymupdf.TOOLS.mupdf_display_warnings(False)
        _quietened = True
    return pymupdf


def _annotation_and_field_texts(page: Any, limit: int) -> list[str]:
    """Contents of annotations and values of form fields on one page (at most ``limit`` each)."""
    texts: list[str] = []
    for count, annotation in enumerate(page.annots() or []):
        if count >= limit:
            break
        info = annotation.info or {}
        texts.extend(str(info.get(key) or "") for key in ("content", "subject", "title"))
    for count, widget in enumerate(page.widgets() or []):
        if count >= limit:
            break
        texts.append(f"{widget.field_label or widget.field_name or ''}: {widget.field_value or ''}")
    return [text for text in texts if text.strip()]


def inspect_pdf(data: bytes, location: str, budget: Budget, out: Extraction) -> None:
    pymupdf = _pymupdf()
    if b"/ByteRange" in data and _BYTE_RANGE.search(data):
        out.signed.append(SignedObject(location, "pdf", data))
    try:
        document = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # PyMuPDF raises its own types for every kind of damage
        out.problems.append(Problem(location, "uninspectable", f"unreadable PDF ({type(exc).__name__})"))
        return
    try:
        if document.needs_pass:
            out.problems.append(Problem(location, "uninspectable", "encrypted PDF cannot be inspected"))
            return
        pages = document.page_count
        if pages > budget.limits.max_pdf_pages:
            out.problems.append(Problem(location, "uninspectable",
                                        f"PDF has {pages} pages (limit {budget.limits.max_pdf_pages})"))
            return
        texts: list[str] = []
        extras: list[str] = []
        for page_number in range(pages):
            budget.check_time()
            page = document[page_number]
            plain = page.get_text("text", sort=False)
            # Very wide character spacing: one glyph, or one spaced word, per line.
            texts.append((rebuild_lines(page) or plain) if looks_fragmented(plain) else plain)
            # Stamps added in a PDF editor are annotations (Stamp, FreeText), and
            # document-management forms carry "Độ mật" in fields; neither is page text.
            extras.extend(_annotation_and_field_texts(page, budget.limits.max_archive_members))
        text = "\n".join(texts)
        budget.spend(len(text))
        metadata = document.metadata or {}
        extras.extend(str(metadata.get(key) or "") for key in ("title", "subject", "keywords"))
        if not text.strip():
            out.problems.append(Problem(location, "no-text-layer",
                                        f"PDF has no text layer ({pages} page(s), probably a scan)"))
        out.segments.append(Segment(location, normalise_text(text + "\n" + "\n".join(extras))))
    finally:
        document.close()
