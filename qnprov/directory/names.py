"""Mail addresses from Vietnamese names.

A Vietnamese full name is written family name first, then middle name(s), then the
given name: "Nguyễn Văn An" is family "Nguyễn", middle "Văn", given "An". People are
addressed by the given name, and the common convention of Vietnamese state agencies'
mail systems is the given name followed by the initials of the family and middle
names: "Nguyễn Văn An" -> ``annv``. That is the default pattern (``{given}{initials}``);
see docs/directory.md for the alternatives.

Local parts are lower-case ASCII: diacritics are stripped and đ/Đ, and Ð (U+00D0,
often typed for Đ) become d. Input in NFD (combining marks after the base letter) gives
the same result as NFC.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_ADDRESS_PATTERN = "{given}{initials}"
PATTERN_FIELDS = frozenset({"given", "family", "middle", "initials", "family_initial",
                            "middle_initials", "given_initial"})
MAX_LOCAL_PART = 64  # RFC 5321

# Letters that NFD does not decompose into an ASCII base letter.
_SPECIAL_LETTERS = str.maketrans({"đ": "d", "Đ": "d", "Ð": "d", "ð": "d", "ø": "o", "Ø": "o",
                                  "æ": "ae", "Æ": "ae", "ß": "ss", "ł": "l", "Ł": "l"})
_NAME_PUNCTUATION = frozenset(" -'’.")

# Local parts no person may take: role addresses every mail domain needs.
RESERVED_LOCAL_PARTS = frozenset({
    "postmaster", "abuse", "hostmaster", "webmaster", "root", "admin", "administrator",
    "mailer-daemon", "noreply", "no-reply", "dmarc", "security", "support", "info",
})


@lru_cache(maxsize=65536)  # a province has a few thousand distinct name words
def fold_to_ascii(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text``; everything else is dropped."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFC", text).translate(_SPECIAL_LETTERS))
    base = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # Ð/đ written in NFD stay single code points, so translate once more after decomposing.
    return "".join(ch for ch in base.translate(_SPECIAL_LETTERS).lower() if ch in _ASCII_ALNUM)


_ASCII_ALNUM = frozenset(string.ascii_lowercase + string.digits)


def name_problem(full_name: str) -> str | None:
    """Why ``full_name`` cannot be a person's name, or None if it can."""
    name = unicodedata.normalize("NFC", full_name).strip()
    if not name:
        return "empty name"
    for word in name.split(" "):
        problem = _word_problem(word)
        if problem:
            return problem
    if not fold_to_ascii(name):
        return "name has no Latin letters to build an address from"
    return None


@lru_cache(maxsize=65536)  # names repeat their words: checking each distinct word once is enough
def _word_problem(word: str) -> str | None:
    for ch in word:
        if ch in _NAME_PUNCTUATION or unicodedata.category(ch).startswith(("L", "M")):
            continue
        return f"character {ch!r} (U+{ord(ch):04X}) is not a letter, space, hyphen, apostrophe or dot"
    return None


@dataclass(frozen=True)
class NameParts:
    family: str
    middle: tuple[str, ...]
    given: str

    @property
    def surname(self) -> str:
        """LDAP ``sn``: the family name (the whole name if it is a single word)."""
        return self.family or self.given

    @property
    def given_names(self) -> str:
        """LDAP ``givenName``: middle and given names, as people write them after the family name."""
        return " ".join((*self.middle, self.given))


def split_name(full_name: str) -> NameParts:
    words = unicodedata.normalize("NFC", full_name).split()
    if not words:
        raise ValueError("empty name")
    if len(words) == 1:
        return NameParts(family="", middle=(), given=words[0])
    return NameParts(family=words[0], middle=tuple(words[1:-1]), given=words[-1])


def normalize_name(full_name: str) -> str:
    """NFC with single spaces: the form stored in ``cn`` and compared on re-sync."""
    return " ".join(unicodedata.normalize("NFC", full_name).split())


@lru_cache(maxsize=64)
def check_pattern(pattern: str) -> None:
    """Raise ValueError unless ``pattern`` uses only the known fields."""
    fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    unknown = fields - PATTERN_FIELDS
    if unknown or not fields:
        raise ValueError(f"address pattern {pattern!r}: use only {{{'}, {'.join(sorted(PATTERN_FIELDS))}}}")


def local_part_for(full_name: str, pattern: str = DEFAULT_ADDRESS_PATTERN) -> str:
    """The address local part a name gives before collisions are resolved."""
    check_pattern(pattern)
    parts = split_name(full_name)
    family, given = fold_to_ascii(parts.family), fold_to_ascii(parts.given)
    middle = [fold_to_ascii(m) for m in parts.middle]
    values = {
        "given": given,
        "family": family,
        "middle": "".join(middle),
        "family_initial": family[:1],
        "middle_initials": "".join(m[:1] for m in middle),
        "given_initial": given[:1],
    }
    values["initials"] = values["family_initial"] + values["middle_initials"]
    local = re.sub(r"[^a-z0-9._-]", "", pattern.format(**values).lower()).strip("._-")
    return (local or fold_to_ascii(full_name))[:MAX_LOCAL_PART - 4]


class AddressBook:
    """Addresses already taken in the directory, and the next free one for a base local part.

    The second holder of ``annv`` gets ``annv2``, the third ``annv3``: the suffix counts
    the holders. Callers allocate in a stable order (by employee_id), so a re-run over
    the same directory gives the same result.
    """

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = {address.lower() for address in taken}
        self._next_suffix: dict[str, int] = {}  # base address -> first suffix worth trying

    def is_taken(self, address: str) -> bool:
        address = address.lower()
        return address in self._taken or address.partition("@")[0] in RESERVED_LOCAL_PARTS

    def reserve(self, address: str) -> None:
        self._taken.add(address.lower())

    def allocate(self, local: str, domain: str) -> str:
        base = f"{local}@{domain}"
        suffix = self._next_suffix.get(base, 1)
        candidate = base if suffix == 1 else f"{local}{suffix}@{domain}"
        while self.is_taken(candidate):
            suffix += 1
            candidate = f"{local}{suffix}@{domain}"
        self._next_suffix[base] = suffix + 1
        self.reserve(candidate)
        return candidate
