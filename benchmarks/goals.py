"""Goals beside figures: every benchmark states its goal next to what it measured, and "met" or "not met".

Run as ``python benchmarks/<name>.py``, a benchmark finds this module beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
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


def reader_main(description: str, run: Callable[[int], dict[str, Any]], default_rounds: int) -> int:
    """The command line of a benchmark that reads documents with several readers
    (office_reader, pdf_reader): ``--rounds``, ``--json``; each row's readers with their
    CPU time and what they miss, then the goals. Exit 0 only if every goal is met."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=default_rounds)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.rounds)
    goals: list[Goal] = result["goals"]
    if args.json:
        print(json.dumps({**result, "goals": [goal.as_dict() for goal in goals]}, indent=2, ensure_ascii=False))
    else:
        for name, row in result["rows"].items():
            print(f"{name} ({row['bytes']} bytes), CPU ms per document (median of {args.rounds}):")
            for reader, reading in row["readers"].items():
                ratio = f" ({reading['ratio_to_qnprov']}x qnprov)" if "ratio_to_qnprov" in reading else ""
                print(f"  {reader}: {reading['cpu_ms']} ms{ratio}, misses {', '.join(reading['missing']) or 'nothing'}")
        print_goals(goals)
    return 0 if all(goal.met for goal in goals) else 1


def median_cpu_seconds(readers: Mapping[str, Callable[[bytes], object]], data: bytes, rounds: int) -> dict[str, float]:
    """Median CPU seconds per reader of a document benchmark; the readers take turns each
    round, so a change in the machine's load (other jobs share it) falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(rounds):
        for name, read in readers.items():
            started = time.process_time()
            read(data)
            times[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in times.items()}
