"""Lines of a PDF page rebuilt from glyph positions, for text set with very wide spacing.

With wide character spacing (the PDF ``Tc`` operator: reportlab ``setCharSpace(12)`` at
13 pt, Word's "expanded by 12 pt"), PyMuPDF's plain extraction puts each glyph on its own
line with nothing between the words ("M\\nẬ\\nT\\nB\\nÁ\\nO"), so a stamp is lost in the
text that follows it; with character spacing plus word spacing (``Tw``) each word becomes
its own line ("TÀI LIỆU " then "MẬT"), so a phrase reads as a stamp alone on its line.

When a page's plain text looks like that (see :func:`looks_fragmented`), its lines are
rebuilt from ``page.get_text("words")`` (with wide spacing, PyMuPDF's "words" are single
glyphs or a few): pieces grouped by their bottom edge, ordered by x, a space where the gap
to the previous piece is wider than the line's usual letter gap by a fifth of the line
height, and a line break where it is wider by three line heights (table columns). The
spaces PyMuPDF synthesises are ignored: only positions count. "words" costs about 1.6x
the plain text's CPU time ("rawdict", per glyph, costs about 18x).

Bounded: only pages that look fragmented are rebuilt, a page with more than
``MAX_GLYPHS`` pieces keeps its plain text, and the caller checks the inspection clock
between pages. Text in other directions than left to right is ordered by position like
the rest on such pages.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

#: Plain-text lines of this shape, on one page, make it worth rebuilding.
MIN_FRAGMENT_LINES = 2
#: Above this many glyphs on a page, the plain text is kept (the rebuild sorts them).
MAX_GLYPHS = 200_000
_WORD_GAP = 0.2  # of the font size, over the line's letter gap
_COLUMN_GAP = 3.0
_SAME_BASELINE = 0.3  # of the font size


def _is_fragment(line: str) -> bool:
    """One glyph ("Ậ"), or letters spaced apart with at least as many single letters as longer
    pieces ("T À I ", "L I ỆU ", "M ẬT")."""
    tokens = line.split()
    if not tokens:
        return False
    if len(tokens) == 1:
        return len(tokens[0]) == 1
    single = sum(len(token) == 1 for token in tokens)
    return all(len(token) <= 3 for token in tokens) and single * 2 >= len(tokens)


def looks_fragmented(text: str) -> bool:
    """Whether the plain text of a page has glyph-per-line or letter-spaced-word-per-line runs."""
    count = 0
    for line in text.splitlines():
        if _is_fragment(line):
            count += 1
            if count >= MIN_FRAGMENT_LINES:
                return True
    return False


Glyph = tuple[float, float, float, float, str]  # bottom y, x0, x1, height, text


def _glyphs(words: list[tuple[Any, ...]]) -> list[Glyph]:
    """PyMuPDF's words (one glyph each, or a few, when the spacing is wide) as positioned pieces."""
    return [(float(y1), float(x0), float(x1), max(float(y1) - float(y0), 1.0), str(text))
            for x0, y0, x1, y1, text, *_ in words if str(text).strip()]


def _baselines(glyphs: list[Glyph]) -> list[list[Glyph]]:
    glyphs.sort(key=lambda glyph: (glyph[0], glyph[1]))
    lines: list[list[Glyph]] = []
    for glyph in glyphs:
        if lines and abs(glyph[0] - lines[-1][0][0]) <= _SAME_BASELINE * max(glyph[3], lines[-1][0][3]):
            lines[-1].append(glyph)
        else:
            lines.append([glyph])
    for line in lines:
        line.sort(key=lambda glyph: glyph[1])
    return lines


def _line_text(line: list[Glyph]) -> str:
    """Pieces of one baseline as text. Whole words (ordinary text) are joined with a space;
    letter-spaced pieces are joined by their gaps."""
    if not _is_fragment(" ".join(glyph[4] for glyph in line)):
        return " ".join(glyph[4] for glyph in line)
    size = max(glyph[3] for glyph in line)
    gaps = [after[1] - before[2] for before, after in pairwise(line)]
    usable = sorted(gap for gap in gaps if gap > -_WORD_GAP * size)  # not a combining mark's overlap
    letter_gap = usable[len(usable) // 4] if usable else 0.0
    out = [line[0][4]]
    for gap, glyph in zip(gaps, line[1:], strict=False):
        if gap > letter_gap + _COLUMN_GAP * size:
            out.append("\n")
        elif gap > letter_gap + _WORD_GAP * size:
            out.append(" ")
        out.append(glyph[4])
    return "".join(out)


def rebuild_lines(page: Any) -> str | None:
    """The page's text with lines rebuilt from word positions, or None when it has too many pieces."""
    words = page.get_text("words", sort=False)
    if len(words) > MAX_GLYPHS:
        return None
    return "\n".join(_line_text(line) for line in _baselines(_glyphs(words))) + "\n"
