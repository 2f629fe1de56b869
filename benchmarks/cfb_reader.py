"""The policy's own compound-file reader (qnprov/policy/legacy.py) against olefile.

The milter reads Office 97-2003 and password-protected OOXML containers with a small reader
of its own, so the mail host needs no extra package. This measures what that costs: the
time to open a container and read every stream, for ours and for olefile (the reference),
on a Word 97 document (tests' writer) and a password-protected docx (msoffcrypto-tool), and
checks that both return the same bytes.

Goal: ours is no slower than olefile (ratio ours/olefile <= 1.0) on each file.

    .venv/bin/python benchmarks/cfb_reader.py [--rounds 300] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "policy"))

import olefile
from goals import Goal, print_goals
from legacy_corpus import word97
from msoffcrypto.format.ooxml import OOXMLFile
from policy_corpus import docx

from qnprov.policy.legacy import CompoundFile

GOAL_RATIO = 1.0
PARAGRAPH = "Thực hiện Kế hoạch số 15/KH-UBND, Sở đề nghị các đơn vị báo cáo kết quả thực hiện.\r"


def ours(data: bytes) -> dict[str, bytes]:
    cfb = CompoundFile(data)
    return {path: cfb.read(path, 1 << 30) for path in cfb.streams()}


def reference(data: bytes) -> dict[str, bytes]:
    ole = olefile.OleFileIO(io.BytesIO(data))
    return {"/".join(path): ole.openstream(path).read() for path in ole.listdir()}


def median_seconds(read: Callable[[bytes], dict[str, bytes]], data: bytes, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        read(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def samples() -> dict[str, bytes]:
    encrypted = io.BytesIO()
    OOXMLFile(io.BytesIO(docx(body="Báo cáo\n" * 200))).encrypt("benchmark", encrypted)
    return {
        "word97-200-paragraphs": word97([(PARAGRAPH * 200, False)]),
        "encrypted-docx": encrypted.getvalue(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = {}
    for name, data in samples().items():
        assert ours(data) == reference(data), f"{name}: the readers disagree"
        mine = median_seconds(ours, data, args.rounds)
        theirs = median_seconds(reference, data, args.rounds)
        ratio = mine / theirs
        rows[name] = {"bytes": len(data), "ours_ms": round(mine * 1000, 3), "olefile_ms": round(theirs * 1000, 3),
                      "ratio": round(ratio, 3), "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO}
    goals = [Goal(f"{name} ours / olefile", row["ratio"], GOAL_RATIO) for name, row in rows.items()]
    if args.json:
        print(json.dumps({"rows": rows, "goals": [goal.as_dict() for goal in goals]}, indent=2))
    else:
        for name, row in rows.items():
            print(f"{name} ({row['bytes']} bytes): ours {row['ours_ms']} ms, olefile {row['olefile_ms']} ms")
        print_goals(goals)
    return 0 if all(goal.met for goal in goals) else 1

if __name__ == "__main__":
    sys.exit(main())
