"""The shared vocabulary of content extraction: segments, problems, signed objects, the budget.

Every inspector (MIME walking, archives, PDF, Office, legacy formats) records what it reads
into an :class:`Extraction` and checks the one :class:`Budget` of the message; this module
imports none of them, so each can import it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from qnprov.policy.markings import may_contain_marking, normalise_text
from qnprov.policy.models import Limits

ProblemKind = Literal["uninspectable", "no-text-layer"]


@dataclass(frozen=True)
class Segment:
    location: str
    text: str


@dataclass(frozen=True)
class Problem:
    location: str
    kind: ProblemKind
    reason: str


@dataclass(frozen=True)
class SignedObject:
    """Something that carries a signature, kept as the original bytes."""

    location: str
    kind: Literal["smime", "p7s", "pdf"]
    data: bytes
    content: bytes | None = None  # detached content of a .p7s, when found


@dataclass
class Extraction:
    segments: list[Segment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    signed: list[SignedObject] = field(default_factory=list)


def add_segment(out: Extraction, location: str, text: str) -> None:
    """Keep text for the marking matcher, unless it cannot possibly hold a marking.

    Every marking form contains "mật", whose "ậ" is U+1EAC/U+1EAD composed or carries
    U+0323 (dot below) when decomposed; HTML/XML may spell it as a character reference.
    Text with none of these skips normalisation entirely: the fast path for clean mail.
    """
    if may_contain_marking(text):
        out.segments.append(Segment(location, normalise_text(text)))


class LimitExceeded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_wall_seconds
        self.expanded = 0
        self.parts = 0
        self.files = 0  # archive entries seen, across every nested archive

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"inspection took longer than {self.limits.max_wall_seconds:g} s")

    def spend(self, nbytes: int) -> None:
        self.expanded += nbytes
        if self.expanded > self.limits.max_total_expanded_bytes:
            raise LimitExceeded(f"expanded content exceeds {self.limits.max_total_expanded_bytes} bytes")
        self.check_time()
