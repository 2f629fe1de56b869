"""Vietnamese 8-bit font encodings (TCVN3/ABC, VNI) read as Unicode.

Before Unicode, Vietnamese text was typed in fonts whose glyphs sit on Latin-1 code points:
Word stores the characters as those code points (cp1252), and shows them as Vietnamese
only through the font (.VnTime for TCVN3, "VNI-Times" for VNI). Decoding is therefore a
mapping from those code points.

:func:`legacy_font_readings` gives both readings of a text, for the marking matcher; the
Office 97-2003 and RTF readers (:mod:`qnprov.policy.legacy_files`) and the extraction of
RTF found by content (:mod:`qnprov.policy.extract`) offer them beside the text itself.
"""

from __future__ import annotations

import re
import unicodedata

# TCVN 5712:1993 "VN3" (the ABC keyboard's .Vn fonts): one byte per letter, lower case
# only for toned vowels (the ".VnTimeH" fonts draw the same codes as capitals).
# Checked against public converters (e.g. github.com/hdbd789/clinic, Converter.cs).
_TCVN3_SOURCE = ("µ¸¶·¹" "¨»¾¼½Æ" "©ÇÊÈÉË" "®" "ÌÐÎÏÑ" "ªÒÕÓÔÖ" "×ÝØÜÞ" "ßãáâä" "«åèæçé" "¬êíëìî"
                 "ïóñòô" "\u00adõøö÷ù" "úýûüþ" "¡¢§£¤¥¦")
_TCVN3_TARGET = ("àáảãạ" "ăằắẳẵặ" "âầấẩẫậ" "đ" "èéẻẽẹ" "êềếểễệ" "ìíỉĩị" "òóỏõọ" "ôồốổỗộ" "ơờớởỡợ"
                 "ùúủũụ" "ưừứửữự" "ỳýỷỹỵ" "ĂÂĐÊÔƠƯ")
_TCVN3 = str.maketrans(_TCVN3_SOURCE, _TCVN3_TARGET)
_TCVN3_ANY = re.compile("[" + re.escape(_TCVN3_SOURCE) + "]")
# A word in TCVN3 text: letters and the code points TCVN3 redraws ("¸", "×", "\xad" are not \w).
_TCVN3_WORD = re.compile("[\\w" + re.escape(_TCVN3_SOURCE) + "]+")


def _tcvn3_word(match: re.Match[str]) -> str:
    """A word typed with capital ASCII letters and TCVN3 toned vowels ("MËT" -> "MậT") is
    shown in capitals: TCVN3 has no capital toned vowels, so text typed in caps (in a
    ".VnTimeH" font) carries this mix. Only words with a TCVN3 code point are touched."""
    word = match.group()
    decoded = word.translate(_TCVN3)
    if decoded == word or any("a" <= ch <= "z" for ch in word):
        return decoded
    capitals = [index for index, ch in enumerate(word) if "A" <= ch <= "Z"]
    # "Sè" is sentence case ("Số"); "MËT", "TèI" and "UBND TØNH" are capitals.
    if len(capitals) >= 2 or (capitals and capitals[0] > 0):
        return decoded.upper()
    return decoded


def decode_tcvn3(text: str) -> str:
    return _TCVN3_WORD.sub(_tcvn3_word, text)


# VNI Windows: a base letter followed by a mark byte; đ, ơ, ư and the i/ỵ letters are single
# bytes. Marks in the order acute, grave, hook, tilde, dot below; the VNI-Times font
# layout as published by the VNI keyboard and in xvnkb's vni.h.
_ACUTE, _GRAVE, _HOOK, _TILDE, _DOT = "\u0301", "\u0300", "\u0309", "\u0303", "\u0323"
_CIRCUMFLEX, _BREVE = "\u0302", "\u0306"
_VNI_MARKS = {
    "ù": _ACUTE, "ø": _GRAVE, "û": _HOOK, "õ": _TILDE, "ï": _DOT,
    "â": _CIRCUMFLEX, "á": _CIRCUMFLEX + _ACUTE, "à": _CIRCUMFLEX + _GRAVE, "å": _CIRCUMFLEX + _HOOK,
    "ã": _CIRCUMFLEX + _TILDE, "ä": _CIRCUMFLEX + _DOT,
    "ê": _BREVE, "é": _BREVE + _ACUTE, "è": _BREVE + _GRAVE, "ú": _BREVE + _HOOK, "ü": _BREVE + _TILDE,
    "ë": _BREVE + _DOT,
}
_VNI_MARKS |= {mark.upper(): value for mark, value in _VNI_MARKS.items()}
_VNI_SINGLE = {"ô": "ơ", "ö": "ư", "ñ": "đ", "í": "í", "ì": "ì", "æ": "ỉ", "ó": "ĩ", "ò": "ị", "î": "ỵ"}
_VNI_SINGLE |= {key.upper(): value.upper() for key, value in _VNI_SINGLE.items()}
# One left-to-right pass: a base letter with its mark, or a single-byte letter. (Two passes
# would re-read a just-composed "Ò" (o + grave) as the single byte for "Ị".)
_VNI = re.compile("([aeouyAEOUYôöÔÖ])([" + "".join(_VNI_MARKS) + "])|([" + "".join(_VNI_SINGLE) + "])")


def _vni_letter(match: re.Match[str]) -> str:
    if match.group(3):
        return _VNI_SINGLE[match.group(3)]
    base, marks = match.group(1), _VNI_MARKS[match.group(2)]
    base = _VNI_SINGLE.get(base, base)
    if (marks.startswith(_CIRCUMFLEX) and base.lower() not in "aeo") or (
            marks.startswith(_BREVE) and base.lower() != "a"):
        return base + match.group(2)  # not a Vietnamese letter: keep the mark byte as it is
    return unicodedata.normalize("NFC", base + marks)


def decode_vni(text: str) -> str:
    return _VNI.sub(_vni_letter, text)


def legacy_font_readings(text: str) -> list[str]:
    """The text as TCVN3 and as VNI would show it, when it has characters those fonts redraw.

    Both readings are offered to the matcher beside the text itself: which font a run uses
    is not known here, and a stamp form ("MẬT" alone on a line) does not appear by chance
    in a wrong reading.
    """
    if not _TCVN3_ANY.search(text):
        return []
    readings = [decode_tcvn3(text)]
    vni = decode_vni(text)
    if vni != text:
        readings.append(vni)
    return readings
