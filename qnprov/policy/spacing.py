"""Letter-spaced and broken text put back together before markings are matched.

PDF stamps are often set or extracted with their letters spaced ("T U Y Ệ T   M Ậ T"),
as short fragments ("T ỐI M ẬT"), or one word a line in a narrow box ("TUYỆT" above
"MẬT"). :class:`SpacedText` rewrites such runs as words, using the known forms of the
markings data (stamps, metadata labels, other stamps, ordinary words such as "bảo mật")
so that only exact spellings of those forms are joined: ordinary prose stays as it is,
and an ordinary word spelled out stays that word, never a stamp.
:class:`qnprov.policy.markings.MarkingMatcher` then matches the rewritten lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from qnprov.policy.models import MarkingData

# Letter-spaced text: single letters separated by horizontal white space of any kind
# (space, NBSP, thin/figure/ideographic spaces), as PDF stamps are set or extracted
# ("T U Y Ệ T   M Ậ T"). Tabs stay cell separators.
_LETTER = r"[^\W\d_][\u0300-\u036f]*"
_GAP = r"[^\S\t\n\r\f\v]{1,8}"
# PDF character spacing is often extracted as short fragments rather than single letters:
# "T ỐI M ẬT", "M ẬT" (PyMuPDF joins glyphs whose gap is below its threshold). A token is
# one to three letters; a run with any multi-letter token only counts when it spells known
# forms exactly, so ordinary short words ("ở mức tối mật") are never joined.
_TOKEN = rf"(?:{_LETTER}){{1,3}}"
_LETTER_RUN = re.compile(rf"(?<![^\W\d_])(?:{_LETTER})(?:{_GAP}{_LETTER}){{1,60}}(?![^\W\d_])")
_SPACED_RUN = re.compile(rf"(?<![^\W\d_])(?:{_TOKEN})(?:{_GAP}{_TOKEN}){{1,60}}(?![^\W\d_])")
_FRAGMENT_LINE = re.compile(rf"[^\S\n]*(?:{_TOKEN})(?:{_GAP}(?:{_TOKEN}))*[^\S\n]*")
_SINGLE_LETTER = re.compile(rf"(?<![^\W\d_]){_LETTER}(?![^\W\d_])")
# A quick test for a spaced "m ậ" or "ậ t": only such text needs rewriting.
SPACED_QUICK = re.compile(r"m[^\S\n]+\u1ead|\u1ead[^\S\n]+t", re.IGNORECASE)
_MAX_FRAGMENT_LINES = 4
_ONE_WORD = re.compile(r"\s*[^\W\d_]+\s*")  # a stamp split over lines by the extractor: "T ỐI" / "M ẬT"
_COMBINING = re.compile("[\u0300-\u036f]")
_GAP_SPLIT = re.compile(r"[^\S\t\n\r\f\v]+")
_MAX_SPELLED = 32  # letters of a letter-spaced run worth splitting into known forms


def _collapse(text: str) -> str:
    return _GAP_SPLIT.sub("", text).casefold()


class SpacedText:
    """Rewrites spaced or broken runs for one version of the markings data.

    ``stamps`` are the stamps the matcher looks for (with the declassified one when it
    counts as a marking): they come out upper case once spelled out.
    """

    def __init__(self, data: MarkingData, stamps: Iterable[str]) -> None:
        ordered = list(stamps)  # the order the spellings are registered in, as the matcher lists them
        self._stamps = frozenset(ordered)
        # Letter-spaced forms, by their letters alone: "t ố i m ậ t" -> "TỐI MẬT" (a stamp in
        # any case once spelled out letter by letter), "Đ ộ   m ậ t" -> "Độ mật" (a label).
        # Ordinary words spelled out ("B Ả O   M Ậ T") are read as those words, never as a stamp.
        self._ordinary = frozenset(data.ordinary_words)
        self._spelled: dict[str, str] = {_collapse(word): word for word in data.ordinary_words}
        self._spelled.update({_collapse(label): label for label in data.metadata_labels})
        self._spelled.update({_collapse(stamp): stamp for stamp in data.not_secrecy})
        self._spelled.update({_collapse(stamp): stamp for stamp in ordered})
        self._longest_spelled = max(len(key) for key in self._spelled)
        # A line that ends in a space continues on the next one when the two words form an
        # ordinary word or a stamp: "BẢO " / "MẬT" is "BẢO MẬT" (PDF word spacing), "TỐI " / "MẬT" is "TỐI MẬT".
        self._bridges = {word.casefold() for word in data.ordinary_words}
        self._bridges.update(stamp.casefold() for stamp in self._stamps if " " in stamp)

    def join_continued_lines(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        for line in lines:
            if out and _ONE_WORD.fullmatch(out[-1]) and _ONE_WORD.fullmatch(line):
                stacked = f"{out[-1].strip()} {line.strip()}"
                if stacked.casefold() in self._bridges:
                    # One word a line in a narrow box or cell: "TUYỆT" above "MẬT" is one
                    # stamp, "BẢO" above "MẬT" is the ordinary word.
                    out[-1] = stacked
                    continue
            if out and out[-1][-1:] in (" ", "\u00a0") and line[:1].strip():
                last = out[-1].split()[-1:] if out[-1].strip() else []
                first = line.split()[:1]
                if last and first and f"{last[0]} {first[0]}".casefold() in self._bridges:
                    out[-1] = out[-1].rstrip() + " " + line
                    continue
            out.append(line)
        return out

    def join_fragment_lines(self, lines: list[str]) -> list[str]:
        """A letter-spaced stamp the extractor broke over lines ("T ỐI " then "M ẬT"): the
        longest run of consecutive fragment lines that spells known forms, with at least one
        single letter and one stamp, becomes one line."""
        out: list[str] = []
        index = 0
        while index < len(lines):
            line = lines[index]
            joined = None
            if line.strip() and _FRAGMENT_LINE.fullmatch(line):
                end = index + 1
                while (end < len(lines) and end - index < _MAX_FRAGMENT_LINES and lines[end].strip()
                       and _FRAGMENT_LINE.fullmatch(lines[end])):
                    end += 1
                for stop in range(end, index + 1, -1):
                    group = " ".join(lines[index:stop])
                    phrases = self._spelled_stamps(group, ordinary=True)
                    if phrases is not None:
                        joined, index = "  ".join(phrases), stop
                        break
            if joined is None:
                out.append(line)
                index += 1
            else:
                out.append(joined)
        return out

    def _spelled_stamps(self, run: str, *, ordinary: bool = False) -> list[str] | None:
        """Known forms a run of fragments spells, stamps upper-cased, or None. The run must
        hold a single letter (it is letter-spaced, not words) and spell at least one stamp
        (or, with ``ordinary``, an ordinary word such as "bảo mật", which then stays a word)."""
        letters = _collapse(run)
        if len(letters) > _MAX_SPELLED or not _SINGLE_LETTER.search(run):
            return None
        phrases = self._spell(letters)
        if not phrases or not any(p in self._stamps or (ordinary and p in self._ordinary) for p in phrases):
            return None
        return [p.upper() if p in self._stamps or run.isupper() else p for p in phrases]

    def despace(self, line: str) -> str:
        """Letter-spaced runs written out as words: "T U Y Ệ T   M Ậ T" -> "TUYỆT MẬT".

        A run made entirely of known forms (stamps, labels, other stamps such as KHẨN) is
        rebuilt from them, each its own segment; any other run becomes its words, so
        "B Ả O   M Ậ T" reads "BẢO MẬT", which is no stamp."""

        def letters_only(match: re.Match[str]) -> str:
            run = match.group(0)
            letters = _collapse(run)
            # Known forms are short ("ĐỘ MẬT TUYỆT MẬT" is 13 letters); a longer run is words.
            phrases = self._spell(letters) if len(letters) <= _MAX_SPELLED else None
            if phrases is not None:
                return "  ".join(p.upper() if p in self._stamps or run.isupper() else p for p in phrases)
            gaps = [len(gap) for gap in _GAP_SPLIT.findall(run)]
            narrow = min(gaps)
            if max(gaps) == narrow:
                return run  # evenly spaced and no known form: leave it
            words = re.split(rf"[^\S\t\n\r\f\v]{{{narrow + 1},}}", run)
            return " ".join(_GAP_SPLIT.sub("", word) for word in words)

        def repl(match: re.Match[str]) -> str:
            run = match.group(0)
            if all(len(token) == 1 for token in _GAP_SPLIT.split(_COMBINING.sub("", run))):
                return letters_only(match)
            # Fragments ("T ỐI M ẬT"): only an exact spelling of known forms with a stamp;
            # otherwise the single letters inside ("gửi T Ố I   M Ậ T") are read as before.
            spelled = self._spelled_stamps(run)
            return "  ".join(spelled) if spelled is not None else _LETTER_RUN.sub(letters_only, run)

        return _SPACED_RUN.sub(repl, line)

    def _spell(self, letters: str) -> list[str] | None:
        """Split spelled-out letters into known forms, or None (dynamic programming, short input)."""
        best: list[list[str] | None] = [None] * (len(letters) + 1)
        best[0] = []
        for end in range(1, len(letters) + 1):
            for start in range(max(0, end - self._longest_spelled), end):
                head = best[start]
                phrase = self._spelled.get(letters[start:end])
                if head is not None and phrase is not None:
                    best[end] = [*head, phrase]
                    break
        return best[-1]
