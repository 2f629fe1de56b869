#!/usr/bin/env python3
"""Run pytest, and fail when it ran no test.

pytest exits 5 when it collects or selects nothing, but exits 0 when every test it
collected was skipped. `make test` runs its pytest through this guard so that both
count as failures: a run that checked nothing has not passed.

Usage: .venv/bin/python scripts/pytest-guard.py [PYTEST ARGS...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from qnprov import freshstage


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="qnprov-pytest-guard-") as tmp:
        junit = Path(tmp) / "report.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "--junitxml", str(junit), *argv], check=False)
        counts = freshstage.junit_counts(junit.read_text(encoding="utf-8")) if junit.exists() else None
    step = freshstage.FreshStep("pytest " + " ".join(argv), (), junit=str(junit))
    verdict = freshstage.step_verdict(step, proc.returncode, counts)
    print(f"pytest-guard: {verdict}", file=sys.stderr)
    if verdict == "passed":
        return 0
    return proc.returncode or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
