"""Prepare the milter's wheelhouse on the controller, doing only the work that is due.

Run by roles/qnprov_milter (tasks/install.yml) with the controller's Python:

    wheelhouse.py --source DIR --wheelhouse DIR [--download] [--runtime REQ ...] [--nodeps REQ ...]

* qnprov's own wheel is built (``pip wheel --no-deps``, reproducible timestamps) only when
  the source it is built from changed: a SHA-256 over ``pyproject.toml`` and every file of
  the packages under ``qnprov/`` is kept beside the wheel.
* The runtime wheels are fetched from the index (``pip download --only-binary=:all:``) only
  when the requirement lists changed, or once a day (so a fixed dependency release still
  arrives within a day), and only with ``--download``.
* The tarball the role copies to the mail hosts is packed again only when a wheel changed
  or it is missing (sorted names, fixed mtime and owners: the same wheels give the same bytes).

It prints one JSON line saying what it did. Whether a mail host changes is decided by the
role's copy of the tarball (checksums), not here.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

SOURCE_STAMP = ".qnprov-source.sha256"
REQUIREMENTS_STAMP = ".requirements.sha256"
REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold


def source_digest(source: Path) -> str:
    """SHA-256 over pyproject.toml and every file under qnprov/ (caches left out)."""
    digest = hashlib.sha256()
    files = [source / "pyproject.toml"]
    files += sorted(p for p in (source / "qnprov").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def requirements_digest(runtime: list[str], nodeps: list[str], today: datetime.date) -> str:
    text = json.dumps({"runtime": runtime, "nodeps": nodeps, "day": today.isoformat()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stamp_matches(path: Path, value: str) -> bool:
    return path.is_file() and path.read_text(encoding="utf-8").strip() == value


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH})


def prepare(source: Path, wheelhouse: Path, *, download: bool, runtime: list[str], nodeps: list[str],
            today: datetime.date | None = None) -> dict[str, bool]:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    did = {"built": False, "downloaded": False, "packed": False}

    digest = source_digest(source)
    if not (_stamp_matches(wheelhouse / SOURCE_STAMP, digest) and any(wheelhouse.glob("qnprov-*.whl"))):
        _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheelhouse), str(source))
        (wheelhouse / SOURCE_STAMP).write_text(digest + "\n", encoding="utf-8")
        did["built"] = True

    if download:
        wanted = requirements_digest(runtime, nodeps, today or datetime.date.today())
        if not _stamp_matches(wheelhouse / REQUIREMENTS_STAMP, wanted):
            if runtime:
                _pip("download", "--quiet", "--only-binary=:all:", "--dest", str(wheelhouse), *runtime)
            if nodeps:
                _pip("download", "--quiet", "--only-binary=:all:", "--no-deps", "--dest", str(wheelhouse), *nodeps)
            (wheelhouse / REQUIREMENTS_STAMP).write_text(wanted + "\n", encoding="utf-8")
            did["downloaded"] = True

    tarball = wheelhouse.with_name(wheelhouse.name + ".tar")
    if did["built"] or did["downloaded"] or not tarball.is_file():
        # The stamps stay out of the tarball: only wheels go to the mail hosts.
        wheels = sorted(p.name for p in wheelhouse.iterdir() if p.suffix == ".whl")
        partial = tarball.with_name(tarball.name + ".partial")
        subprocess.run(["tar", "--sort=name", f"--mtime=@{REPRODUCIBLE_EPOCH}", "--owner=0", "--group=0",
                        "--numeric-owner", "-C", str(wheelhouse), "-cf", str(partial), *wheels], check=True)
        partial.replace(tarball)  # never a half-written tarball where the role copies from
        did["packed"] = True
    return did


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--wheelhouse", type=Path, required=True)
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--runtime", nargs="*", default=[])
    parser.add_argument("--nodeps", nargs="*", default=[])
    args = parser.parse_args(argv)
    did = prepare(args.source.resolve(), args.wheelhouse, download=args.download,
                  runtime=args.runtime, nodeps=args.nodeps)
    print(json.dumps(did))
    return 0


if __name__ == "__main__":
    sys.exit(main())
