"""Goals beside figures: every benchmark states its goal next to what it measured, and "met" or "not met".

Run as ``python benchmarks/<name>.py``, a benchmark finds this module beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    """A measured ``figure`` against ``target``: at most it (``at_most``) or at least it."""

    what: str
    figure: float
    target: float
    unit: str = ""
    at_most: bool = True

    @property
    def met(self) -> bool:
        return self.figure <= self.target if self.at_most else self.figure >= self.target

    def line(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        comparison = "<=" if self.at_most else ">="
        return (f"{self.what}: {self.figure:g}{unit} (goal {comparison} {self.target:g}{unit}, "
                f"{'met' if self.met else 'not met'})")

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "figure": self.figure, "unit": self.unit,
                "goal": f"{'<=' if self.at_most else '>='} {self.target:g}", "met": self.met}


def print_goals(goals: list[Goal]) -> None:
    for goal in goals:
        print(goal.line())
