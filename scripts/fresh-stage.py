#!/usr/bin/env python3
"""The fresh-machine stage of `make test` (see README, "Tests").

Runs scripts/bootstrap.sh as root inside a pristine Debian 12 container made from the
project's own debootstrap image, then lint and every test directory that needs no
container, with loopback as the only network. Exits non-zero when any step failed or a
pytest run ran no test. The container is removed whatever happens.

Usage: .venv/bin/python scripts/fresh-stage.py [--keep]
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from qnprov import freshstage
from qnprov.errors import ExternalError


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM/SIGHUP into an exception so run_fresh_stage's cleanup removes the container.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the container afterwards, to debug a failure")
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    root = Path(__file__).resolve().parent.parent
    try:
        results = freshstage.run_fresh_stage(root, keep=args.keep, out=lambda line: print(line, flush=True))
    except ExternalError as exc:
        print(f"fresh stage: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
