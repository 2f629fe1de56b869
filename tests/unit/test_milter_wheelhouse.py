"""roles/qnprov_milter/files/wheelhouse.py: the controller does only the wheel work that is due.

pip itself is replaced by a recorder that writes the wheel files pip would (the fresh-machine
stage has no index to build or download from); the decisions, the stamps and the tarball
are the script's own.
"""

from __future__ import annotations

import datetime
import importlib.util
import io
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "qnprov_milter" / "files" / "wheelhouse.py"
DAY = datetime.date(2026, 12, 6)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheelhouse", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def wheelhouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[ModuleType, list[tuple[str, ...]]]:
    module = _load()
    calls: list[tuple[str, ...]] = []

    def fake_pip(*args: str) -> None:
        calls.append(args)
        dest = Path(args[args.index("--wheel-dir" if args[0] == "wheel" else "--dest") + 1])
        if args[0] == "wheel":
            (dest / "qnprov-0.1.0-py3-none-any.whl").write_bytes(b"wheel of " + str(len(calls)).encode())
        else:
            for req in args[args.index(str(dest)) + 1:]:
                name = req.split(">")[0].split("=")[0]
                (dest / f"{name}-1.0-py3-none-any.whl").write_bytes(b"dep " + name.encode())

    monkeypatch.setattr(module, "_pip", fake_pip)
    return module, calls


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    (source / "qnprov" / "__pycache__").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'qnprov'\n")
    (source / "qnprov" / "__init__.py").write_text("VERSION = 1\n")
    return source


def test_second_run_with_nothing_changed_does_nothing(wheelhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    module, calls = wheelhouse
    source, house = _source(tmp_path), tmp_path / "house"
    first = module.prepare(source, house, download=True, runtime=["typer>=0.12"], nodeps=["pymupdf>=1.24"], today=DAY)
    assert first == {"built": True, "downloaded": True, "packed": True}
    assert [c[0] for c in calls] == ["wheel", "download", "download"]
    assert "--no-deps" in calls[2] and calls[2][-1] == "pymupdf>=1.24"
    tarball = tmp_path / "house.tar"
    packed = tarball.read_bytes()
    # A byte-code cache appearing is not a source change.
    (source / "qnprov" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    again = module.prepare(source, house, download=True, runtime=["typer>=0.12"], nodeps=["pymupdf>=1.24"], today=DAY)
    assert again == {"built": False, "downloaded": False, "packed": False}
    assert len(calls) == 3 and tarball.read_bytes() == packed


def test_a_source_change_rebuilds_and_repacks_only_the_wheel(wheelhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    module, calls = wheelhouse
    source, house = _source(tmp_path), tmp_path / "house"
    module.prepare(source, house, download=True, runtime=["typer>=0.12"], nodeps=[], today=DAY)
    (source / "qnprov" / "__init__.py").write_text("VERSION = 2\n")
    did = module.prepare(source, house, download=True, runtime=["typer>=0.12"], nodeps=[], today=DAY)
    assert did == {"built": True, "downloaded": False, "packed": True}
    assert [c[0] for c in calls] == ["wheel", "download", "wheel"]


def test_requirements_change_or_a_new_day_fetches_again_and_offline_never_fetches(wheelhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    module, calls = wheelhouse
    source, house = _source(tmp_path), tmp_path / "house"
    module.prepare(source, house, download=True, runtime=["typer>=0.12"], nodeps=[], today=DAY)
    assert module.prepare(source, house, download=True, runtime=["typer>=0.13"], nodeps=[], today=DAY)["downloaded"]
    assert module.prepare(source, house, download=True, runtime=["typer>=0.13"], nodeps=[],
                          today=DAY + datetime.timedelta(days=1))["downloaded"]
    before = len(calls)
    did = module.prepare(source, house, download=False, runtime=["rich>=13"], nodeps=[],
                         today=DAY + datetime.timedelta(days=5))
    assert did == {"built": False, "downloaded": False, "packed": False} and len(calls) == before


def test_the_tarball_holds_only_wheels_with_fixed_owners_and_times(wheelhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    module, _calls = wheelhouse
    source, house = _source(tmp_path), tmp_path / "house"
    module.prepare(source, house, download=True, runtime=["typer>=0.12", "rich>=13"], nodeps=[], today=DAY)
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "house.tar").read_bytes())) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["qnprov-0.1.0-py3-none-any.whl", "rich-1.0-py3-none-any.whl",
                                         "typer-1.0-py3-none-any.whl"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 315532800)}
    assert not list(tmp_path.glob("house.tar.partial"))
