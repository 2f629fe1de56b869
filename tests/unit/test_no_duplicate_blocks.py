"""No block of six or more logical lines appears twice inside qnprov/, as is or renamed.

Every module under qnprov/ is tokenized; comments, blank lines and import statements
are dropped, and each logical line becomes its token sequence. Each run of
``BLOCK_LINES`` consecutive logical lines is then normalised with consistent renaming:
the first identifier in the run becomes ``v0``, the next new one ``v1``, and so on
(keywords and literals stay as they are; so do fields declared as ``name: type``,
which are data rather than code). Two runs with the same normal form are the
same code with other names. Overlapping runs in one place are not a repetition; a
longer repeated block shows up as one finding, with the full line ranges of both places.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from qnprov import paths

BLOCK_LINES = 6
PACKAGE = paths.PROJECT_ROOT / "qnprov"
SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                  tokenize.ENDMARKER, tokenize.ENCODING}


@dataclass(frozen=True)
class LogicalLine:
    first: int  # physical line numbers, 1-based
    last: int
    depth: int  # indentation level
    tokens: tuple[tuple[int, str], ...]


def logical_lines(source: str) -> list[LogicalLine]:
    """The logical lines of ``source`` without comments, blank lines and imports."""
    lines: list[LogicalLine] = []
    current: list[tuple[int, str]] = []
    depth = first = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NEWLINE:
            if current and current[0][1] not in ("import", "from"):
                lines.append(LogicalLine(first, token.start[0], depth, tuple(current)))
            current = []
        elif token.type not in SKIPPED_TOKENS:
            if not current:
                first = token.start[0]
            current.append((token.type, token.string))
    return lines


def is_declaration(line: LogicalLine) -> bool:
    """``name: type`` without a value: a field of a dataclass or model. Fields are data, not
    code, so they are compared as written: two classes with the same fields are a repeated
    block, two classes that merely have as many ``str`` fields are not."""
    tokens = line.tokens
    return (len(tokens) > 2 and tokens[0][0] == tokenize.NAME and tokens[1] == (tokenize.OP, ":")
            and (tokenize.OP, "=") not in tokens)


def normal_form(block: list[LogicalLine]) -> tuple[str, ...]:
    """The block with identifiers renamed consistently, in order of first appearance, and
    each line's indentation relative to the block's first line."""
    names: dict[str, str] = {}
    out = []
    for line in block:
        words = [str(line.depth - block[0].depth)]
        declaration = is_declaration(line)
        for kind, text in line.tokens:
            if kind == tokenize.NAME and not keyword.iskeyword(text) and not declaration:
                text = names.setdefault(text, f"v{len(names)}")
            words.append(text)
        out.append(" ".join(words))
    return tuple(out)


@dataclass(frozen=True)
class Place:
    path: str
    index: int  # position of the block's first logical line in the module


def duplicate_blocks(modules: dict[str, str], size: int = BLOCK_LINES) -> list[str]:
    """One message per repeated block: both places with their physical line ranges."""
    parsed = {path: logical_lines(source) for path, source in modules.items()}
    seen: dict[tuple[str, ...], list[Place]] = defaultdict(list)
    for path, lines in sorted(parsed.items()):
        for index in range(len(lines) - size + 1):
            seen[normal_form(lines[index:index + size])].append(Place(path, index))
    pairs: set[tuple[Place, Place]] = set()
    for places in seen.values():
        for i, a in enumerate(places):
            for b in places[i + 1:]:
                if a.path == b.path and b.index - a.index < size:
                    continue  # the same lines, or a run that overlaps itself
                pairs.add((a, b))
    # A block longer than ``size`` gives one pair per window; report each run once.
    messages = []
    for a, b in sorted(pairs, key=lambda p: (p[0].path, p[0].index, p[1].path, p[1].index)):
        if (Place(a.path, a.index - 1), Place(b.path, b.index - 1)) in pairs:
            continue
        length = size
        while (Place(a.path, a.index + length - size + 1), Place(b.path, b.index + length - size + 1)) in pairs:
            length += 1
        first_a, last_a = parsed[a.path][a.index].first, parsed[a.path][a.index + length - 1].last
        first_b, last_b = parsed[b.path][b.index].first, parsed[b.path][b.index + length - 1].last
        messages.append(f"{a.path}:{first_a}-{last_a} and {b.path}:{first_b}-{last_b} "
                        f"({length} logical lines)")
    return messages


def package_modules(root: Path = PACKAGE) -> dict[str, str]:
    return {str(path.relative_to(root.parent)): path.read_text(encoding="utf-8")
            for path in sorted(root.rglob("*.py"))}


def test_no_block_is_repeated_inside_qnprov() -> None:
    modules = package_modules()
    assert len(modules) > 50  # the whole package was read, not an empty glob
    duplicates = duplicate_blocks(modules)
    assert not duplicates, "repeated blocks (factor them out):\n" + "\n".join(duplicates)


A = '''
def first(items, limit):
    total = 0
    # a comment that differs
    for item in items:
        if item > limit:
            total += item
    return total
'''

B = '''
import os


def second(values, cap):

    acc = 0
    for value in values:
        if value > cap:
            acc += value
    return acc
'''


def test_a_renamed_copy_is_found_with_both_places() -> None:
    assert duplicate_blocks({"a.py": A, "b.py": B}) == ["a.py:2-8 and b.py:5-11 (6 logical lines)"]


def test_a_copy_inside_one_module_is_found() -> None:
    found = duplicate_blocks({"a.py": A + A.replace("first", "third")})
    assert found == ["a.py:2-8 and a.py:10-16 (6 logical lines)"]


def test_a_longer_copy_is_one_finding() -> None:
    longer_a = A.replace("    return total", "    total *= 2\n    return total")
    longer_b = B.replace("    return acc", "    acc *= 2\n    return acc")
    assert duplicate_blocks({"a.py": longer_a, "b.py": longer_b}) == ["a.py:2-9 and b.py:5-12 (7 logical lines)"]


def test_different_code_is_not_a_copy() -> None:
    changed = B.replace("acc += value", "acc -= value")
    assert duplicate_blocks({"a.py": A, "b.py": changed}) == []
    # Inconsistent renaming is different code: ``total`` and ``items`` cannot both become ``x``.
    mixed = A.replace("total += item", "total += items")
    assert duplicate_blocks({"a.py": A, "b.py": mixed}) == []
    # Five shared lines are below the threshold.
    assert duplicate_blocks({"a.py": A, "b.py": B}, size=7) == []


def test_fields_count_as_written() -> None:
    def model(name: str, fields: str) -> str:
        return f"@dataclass(frozen=True)\nclass {name}:\n" + "".join(f"    {f}: str\n" for f in fields.split())

    # As many str fields under other names: not a copy.
    assert duplicate_blocks({"a.py": model("Finding", "id severity finding host port"),
                             "b.py": model("Failure", "host task message role name")}) == []
    # The same fields under another class name: a copy.
    assert duplicate_blocks({"a.py": model("DnsRecord", "name type ttl value note"),
                             "b.py": model("Record", "name type ttl value note")}) \
        == ["a.py:1-7 and b.py:1-7 (7 logical lines)"]


def test_imports_do_not_make_a_block() -> None:
    imports = "\n".join(f"from pkg.m{i} import name{i}" for i in range(8)) + "\n"
    assert duplicate_blocks({"a.py": imports, "b.py": imports}) == []
