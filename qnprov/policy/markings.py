"""Find secrecy markings (clause 1.3(1)) in normalised Vietnamese text.

Precision comes from matching the *forms* a marking takes, never the word alone:

* a stamp: a line, table cell or delimited segment that is exactly "MẬT", "TỐI MẬT" or
  "TUYỆT MẬT" in upper case (stamps are printed upper case; ordinary prose is not);
* document-management metadata: "Độ mật: Tối mật", or an envelope letter A/B/C, but only
  right after such a label;
* a bracketed tag in any case, "[Mật]" or "[Tối mật]", as people write in subjects.

"mật khẩu", "bảo mật", "BÍ MẬT NHÀ NƯỚC", "mật độ", names ... never form a whole segment
equal to a stamp, so they do not match. Matching is done on NFC text with diacritics
intact: folding "mật" to "mat" would also hit "mặt", "mất", "mát" and "mắt".

Letter-spaced and broken stamps ("T U Y Ệ T   M Ậ T", "T ỐI" above "M ẬT") are first
rewritten as words by :mod:`qnprov.policy.spacing`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from qnprov.policy.models import MarkingData
from qnprov.policy.spacing import SPACED_QUICK, SpacedText

# "Ð" (U+00D0, Icelandic eth) and "ð" are typed for "Đ"/"đ" on some keyboards. Cyrillic
# and Greek capitals that look like the Latin letters of a stamp ("МẬТ" with Cyrillic М/Т)
# are folded too: they are the cheapest way to slip a stamp past a literal match. The
# fold happens before NFC so the combining tone marks compose onto the Latin letter.
_LOOKALIKES = str.maketrans({
    "\u00d0": "\u0110", "\u00f0": "\u0111", "\u0189": "\u0110",
    "\u0410": "A", "\u0415": "E", "\u041c": "M", "\u041e": "O", "\u0422": "T", "\u0406": "I", "\u0423": "Y",
    "\u0391": "A", "\u0395": "E", "\u039c": "M", "\u039f": "O", "\u03a4": "T", "\u0399": "I", "\u03a5": "Y",
    **{chr(0xFF21 + i): chr(0x41 + i) for i in range(26)},  # full-width Latin capitals
    **{chr(0xFF41 + i): chr(0x61 + i) for i in range(26)},
})
# Invisible characters that would otherwise split a stamp.
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_QUICK = re.compile("m\u1eadt", re.IGNORECASE)
# Segment boundaries inside a line: tabs/cell breaks, column gaps, brackets, box drawing,
# and separators commonly put around a stamp in subjects ("[MẬT]", "TỐI MẬT - ...").
_SEGMENT_SPLIT = re.compile(
    r"\t|\s{2,}|[|\[\](){}<>«»\"“”‘’*_=~#:;/\\,&+]|\s[-–—]\s|^[-–—]|[-–—]$|[\u2500-\u257f\u25a0-\u25ff]"
)
_STRIP = " .!?-–—'\u00a0"
_SPACES = re.compile(r"\s+")


def may_contain_marking(text: str) -> bool:
    """False only when no marking form can be present: every form contains "ậ"/"Ậ",
    composed (U+1EAD/U+1EAC) or with a combining dot below (U+0323), unless spelled as a
    character reference ("&#7852;") in markup.

    Single characters are searched with memchr; a two-character needle is not (on a 1 MB
    text '"&#" in text' alone took ~0.8 ms, 15x the other three together), so it is only
    looked for when there is an "&" at all."""
    return ("\u1ead" in text or "\u1eac" in text or "\u0323" in text
            or ("&" in text and "&#" in text))


def xml_may_contain_marking(data: bytes) -> bool:
    """The same test on UTF-8 XML bytes; UTF-16 XML (legal, rare) is always inspected."""
    return (b"\xe1\xba\xad" in data or b"\xe1\xba\xac" in data or b"\xcc\xa3" in data
            or (b"&" in data and b"&#" in data) or data[:2] in (b"\xff\xfe", b"\xfe\xff"))


_HAS_LOOKALIKE = re.compile("[" + "".join(re.escape(chr(code)) for code in _LOOKALIKES) + "]")


def normalise_text(text: str) -> str:
    """NFC, look-alike letters repaired, invisible characters removed."""
    text = _INVISIBLE.sub("", text)
    if not text.isascii():
        if _HAS_LOOKALIKE.search(text):  # translate() is slow on long text; most has none
            text = text.translate(_LOOKALIKES)
        text = unicodedata.normalize("NFC", text)
    return text


@dataclass(frozen=True)
class MarkingHit:
    level: str
    form: str  # "stamp" | "metadata" | "tag"
    evidence: str


# A list item: an optional bullet or number, the item, optional closing punctuation.
_LIST_ITEM = re.compile(r"\s*(?:[-–—•*·+>▪◦]|\d{1,2}[.)]|[a-cA-C][.)])?\s*(?P<item>[^\W\d_][^\n]{0,40}?)\s*[.;,]?\s*$")
_MAX_STAMP_RUN = 64  # characters of a segment of stamps side by side ("MẬT TỐI MẬT")
_CONJUNCTIONS = r"v\u00e0|ho\u1eb7c|or|and"


class MarkingMatcher:
    """Compiled matcher for one version of the markings data."""

    def __init__(self, data: MarkingData, *, declassified_is_marking: bool) -> None:
        self._stamps: dict[str, str] = {level.stamp: level.name for level in data.levels}
        # Rank of each level, 0 the highest: a line naming several levels reports the highest.
        self._rank: dict[str, int] = {level.name: index for index, level in enumerate(data.levels)}
        self._levels = frozenset(level.name for level in data.levels)
        if declassified_is_marking:
            self._stamps[data.declassified_stamp] = data.declassified_stamp.capitalize()
            self._rank[data.declassified_stamp.capitalize()] = len(data.levels)
        # "TỐI   MẬT" (justified or column-aligned) must stay one stamp before column splitting.
        multiword = sorted({stamp for stamp in self._stamps if " " in stamp}, key=len, reverse=True)
        self._join_stamps = re.compile(
            "|".join(r"\s+".join(re.escape(word) for word in stamp.split(" ")) for stamp in multiword) or "(?!)"
        )
        ordered = "|".join(re.escape(stamp) for stamp in sorted(self._stamps, key=len, reverse=True))
        self._stamp_one = re.compile(ordered)
        self._stamp_run = re.compile(rf"(?:{ordered})(?: (?:{ordered}))+")
        # Letter-spaced, fragmented and broken stamps are rewritten as words first.
        self._spacing = SpacedText(data, self._stamps)
        names = sorted((level.name for level in data.levels), key=len, reverse=True)
        letters = {level.envelope_letter: level.name for level in data.levels}
        self._letters = letters
        labels = "|".join(re.escape(label).replace(r"\ ", r"\s+") for label in data.metadata_labels)
        values = "|".join(re.escape(name).replace(r"\ ", r"\s+") for name in names)
        if declassified_is_marking:
            values = re.escape(data.declassified_stamp.capitalize()).replace(r"\ ", r"\s+") + "|" + values
        self._value = re.compile(rf"(?P<name>{values})(?!\w)|(?-i:(?P<letter>[{''.join(letters)}]))(?!\w)",
                                 re.IGNORECASE)
        value = rf"(?:{values})(?!\w)|(?-i:[{''.join(letters)}])(?!\w)"
        # "[Mật]" / "[Tối mật]": a bracketed level name is a marking in any letter case.
        self._bracket_tag = re.compile(rf"\[\s{{0,8}}({values})\s{{0,8}}\]", re.IGNORECASE)
        # A label and its value, or a list of values ("Độ mật: Tối mật, Mật"): the highest counts.
        self._metadata = re.compile(
            rf"(?<!\w)(?:{labels})\s{{0,16}}[:：=|\t-]?\s{{0,16}}"
            rf"(?P<values>(?:{value})(?:\s{{0,4}}(?:[,;/|&+–—-]|(?:{_CONJUNCTIONS})(?!\w))\s{{0,4}}(?:{value}))*)",
            re.IGNORECASE,
        )
        # A label alone on its line ("Độ mật:"), its value alone on the next ("Tối mật"): a form
        # or a PDF table whose cells are extracted one per line.
        self._label_line = re.compile(rf"\s*(?:{labels})\s{{0,4}}[:：]?\s*", re.IGNORECASE)
        self._value_line = re.compile(rf"\s*(?P<value>{value})\s*[.;]?\s*", re.IGNORECASE)
        self._level_words = {level.stamp.casefold(): level.name for level in data.levels}
        self._level_words.update({level.name.casefold(): level.name for level in data.levels})
        # Every mention of a level name in any case, longest first ("TỐI MẬT" before "MẬT").
        self._mentions = re.compile(rf"(?<!\w)(?:{values})(?!\w)", re.IGNORECASE)
        cues = [re.escape(cue).replace(r"\ ", r"\s+") for cue in data.enumeration_cues]
        self._cues = re.compile(rf"(?<!\w)(?:{'|'.join(cues)})(?!\w)" if cues else "(?!)", re.IGNORECASE)
        # What is left of a line once every level, label, letter and separator is removed:
        # nothing means the line is stamps alone ("TỐI MẬT | MẬT").
        stamps_alt = "|".join(re.escape(stamp).replace(r"\ ", r"\s+") for stamp in self._stamps)
        self._stamp_like_residue = re.compile(
            rf"(?:{labels})|(?:{values}|{stamps_alt})(?!\w)|(?<!\w)(?:{_CONJUNCTIONS}|[{''.join(letters)}])(?!\w)",
            re.IGNORECASE,
        )

    def find(self, text: str, *, limit: int = 3) -> list[MarkingHit]:
        """Markings in already-normalised text (most documents have none: fast exit)."""
        if not _QUICK.search(text) and not SPACED_QUICK.search(text):
            return []
        hits: list[MarkingHit] = []
        lines = self._spacing.join_continued_lines(text.splitlines())
        if SPACED_QUICK.search(text):
            lines = self._spacing.join_fragment_lines(lines)
        for index, line in enumerate(lines):
            if not _QUICK.search(line):
                if not SPACED_QUICK.search(line):
                    continue
                line = self._spacing.despace(line)
            elif SPACED_QUICK.search(line):
                line = self._spacing.despace(line)
            line_hits = self._line_hits(line) or self._split_field(lines, index)
            if line_hits and (self._in_explained_list(lines, index) or self._in_explained_row(lines, index, line)):
                continue
            hits.extend(line_hits)
            if len(hits) >= limit:
                break
        hits.sort(key=lambda hit: self._rank[hit.level])  # the highest level first
        return hits

    def _lone_level(self, line: str) -> str | None:
        """The level a list item names and nothing else ("- TUYỆT MẬT", "2. Tối mật")."""
        match = _LIST_ITEM.match(line)
        return self._level_words.get(_SPACES.sub(" ", match.group("item")).casefold()) if match else None

    def _in_explained_list(self, lines: list[str], index: int) -> bool:
        """A bulleted list of every level, one per line, under an explanatory line
        ("Bí mật nhà nước được phân loại theo ba độ mật:"): training text, not stamps.
        Each level exactly once; a real document never carries three different stamps."""
        if self._lone_level(lines[index]) is None:
            return False
        start = index
        while start > 0 and self._lone_level(lines[start - 1]) is not None:
            start -= 1
        end = index
        while end + 1 < len(lines) and self._lone_level(lines[end + 1]) is not None:
            end += 1
        named = [self._lone_level(line) for line in lines[start:end + 1]]
        if len(named) != len(self._levels) or set(named) != self._levels:
            return False
        intro = next((line for line in reversed(lines[max(0, start - 3):start]) if line.strip()), "")
        return self._cues.search(intro) is not None

    def _split_field(self, lines: list[str], index: int) -> list[MarkingHit]:
        """"Độ mật:" alone on this line and a level alone on the next non-empty one, which is
        not the first of a list of levels."""
        if not self._label_line.fullmatch(lines[index]):
            return []
        following = [line for line in lines[index + 1:index + 4] if line.strip()]
        value = self._value_line.fullmatch(following[0]) if following else None
        if value is None or (len(following) > 1 and self._value_line.fullmatch(following[1])):
            return []
        found = value.group("value")
        level = self._letters.get(found) or _SPACES.sub(" ", found).capitalize()
        if level not in self._rank:
            return []
        return [MarkingHit(level, "metadata", _excerpt(f"{lines[index].strip()} {found}", 0, 0, width=80))]

    def _in_explained_row(self, lines: list[str], index: int, line: str) -> bool:
        """A row of the specimen stamps, every level exactly once and nothing else
        ("TUYỆT MẬT | TỐI MẬT | MẬT"), right under an explanatory line ("Mẫu con dấu các độ
        mật như sau:"): training text. Two levels side by side, or a row without that
        explanation, is a marked document."""
        mentions = [_SPACES.sub(" ", m.group(0)).casefold() for m in self._mentions.finditer(line)]
        named = [self._level_words.get(mention) for mention in mentions]
        if len(named) != len(self._levels) or set(named) != self._levels:
            return False
        if any(ch.isalpha() for ch in self._stamp_like_residue.sub(" ", line)):
            return False
        intro = next((text for text in reversed(lines[max(0, index - 3):index]) if text.strip()), "")
        return self._cues.search(intro) is not None

    def _line_hits(self, line: str) -> list[MarkingHit]:
        hits: list[MarkingHit] = []
        named: set[str] = set()
        field = False
        explained_field = False
        for match in self._metadata.finditer(line):
            levels = []
            for value in self._value.finditer(match.group("values")):
                if value.group("name") is not None:
                    levels.append(_SPACES.sub(" ", value.group("name")).capitalize())
                else:
                    levels.append(self._letters[value.group("letter")])
            named.update(levels)
            field = field or self._is_field(line[:match.start()])
            # "Mức độ mật: Tuyệt mật, Tối mật, Mật là ba mức phân loại": a label followed by
            # every level and then an explanation is prose about the levels, not a field.
            explained_field = explained_field or (set(levels) == self._levels
                                                  and self._cues.search(line[match.end():]) is not None)
            level = min(levels, key=self._rank.__getitem__)
            hits.append(MarkingHit(level, "metadata", _excerpt(line, match.start(), match.end())))
        for match in self._bracket_tag.finditer(line):
            level = _SPACES.sub(" ", match.group(1)).capitalize()
            named.add(level)
            hits.append(MarkingHit(level, "tag", _excerpt(line, match.start(), match.end())))
        # Stamps are upper case ("MẬT"), or two words in title case ("Tối Mật"), which prose never is.
        if "M\u1eacT" in line or "M\u1eadt" in line:
            stamps = self._stamps_in(line)
            named.update(hit.level for hit in stamps)
            hits.extend(stamps)
        if hits:
            named.update(_SPACES.sub(" ", m.group(0)).capitalize() for m in self._mentions.finditer(line))
            if len(named) > 1 and (not field or explained_field) and self._is_enumeration(line, named):
                return []
            hits.sort(key=lambda hit: self._rank[hit.level])
        return hits

    @staticmethod
    def _is_field(before: str) -> bool:
        """A label at the start of a line or of a cell/column is a field, not prose."""
        if not before.strip(" \u00a0-–—•*·>|;.()[]0123456789"):
            return True
        return re.search(r"(?:\t|\s{2,}|[|;])\s*$", before) is not None

    def _is_enumeration(self, line: str, named: set[str]) -> bool:
        """Explanatory prose naming every level ("Bí mật nhà nước gồm ba độ mật: Tuyệt mật,
        Tối mật và Mật"), not a marked document. A line of stamps alone never is."""
        if not self._levels <= named:
            return False
        residue = self._stamp_like_residue.sub(" ", line)
        if not any(ch.isalpha() for ch in residue):
            return False
        return self._cues.search(line) is not None

    def _stamps_in(self, line: str) -> list[MarkingHit]:
        """Stamp segments of one line."""
        hits = []
        joined = self._join_stamps.sub(lambda m: _SPACES.sub(" ", m.group(0)), line)
        for segment in _SEGMENT_SPLIT.split(joined):
            if not segment or ("M\u1eacT" not in segment and "M\u1eadt" not in segment):
                continue
            candidate = _SPACES.sub(" ", segment.strip(_STRIP))
            level_name = self._stamps.get(candidate)
            if level_name is None and " " in candidate and candidate.istitle():
                level_name = self._stamps.get(candidate.upper())
            if level_name is not None:
                hits.append(MarkingHit(level_name, "stamp", _excerpt(line, *_span(line, candidate))))
            elif len(candidate) <= _MAX_STAMP_RUN and self._stamp_run.fullmatch(candidate):
                # Stamps side by side with no separator: "MẬT TỐI MẬT", "TỐI MẬT MẬT".
                evidence = _excerpt(line, *_span(line, candidate))
                for level in dict.fromkeys(self._stamps[stamp] for stamp in self._stamp_one.findall(candidate)):
                    hits.append(MarkingHit(level, "stamp", evidence))
        return hits


def _span(line: str, candidate: str) -> tuple[int, int]:
    start = line.find(candidate.split(" ")[0])
    return (max(start, 0), max(start, 0) + len(candidate))


def _excerpt(line: str, start: int, end: int, width: int = 40) -> str:
    left = max(0, start - width)
    right = min(len(line), end + width)
    text = _SPACES.sub(" ", line[left:right]).strip()
    return ("…" if left else "") + text + ("…" if right < len(line) else "")
