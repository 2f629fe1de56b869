"""molecule's verify step fails, naming the suite, when one of its integration suites is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qnprov import paths
from qnprov_testing import molecule_verify


def test_every_listed_suite_exists_in_the_project():
    assert molecule_verify.missing_suites() == []
    for suite in molecule_verify.ROLE_SUITES:
        assert (paths.PROJECT_ROOT / suite).is_file(), suite


def test_a_missing_suite_fails_verify_with_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]):
    kept, dropped = molecule_verify.ROLE_SUITES[0], molecule_verify.ROLE_SUITES[1:]
    (tmp_path / kept).parent.mkdir(parents=True)
    (tmp_path / kept).write_text("def test_x():\n    pass\n")
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)

    def no_pytest(*args, **kwargs):
        raise AssertionError(f"pytest must not run on a partial suite list: {args}")

    monkeypatch.setattr(subprocess, "call", no_pytest)
    assert molecule_verify.missing_suites() == list(dropped)
    rc = molecule_verify.main(["--host", "qnprov-none", "--state", str(tmp_path / "state")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "missing" in err
    for suite in dropped:
        assert suite in err
    assert kept not in err.split("missing", 1)[1]
