"""Known outcomes: pass, fail, probe error, setup error (real commands on the local backend)."""

from __future__ import annotations

from typing import Any

import pytest

from qnprov.controls.probes import ProbeError


@pytest.mark.control("QN-PFX-01")
def test_passes(host: Any, record_property: Any) -> None:
    result = host.run("echo qnprov")
    record_property("echo", result.stdout.strip())
    assert result.rc == 0 and result.stdout.strip() == "qnprov"


@pytest.mark.control("QN-PFX-02")
def test_fails(host: Any) -> None:
    assert host.file("/nonexistent/qnprov-fixture").exists, "fixture file is missing on the host"


@pytest.mark.control("QN-PFX-02")
def test_passes_too(host: Any) -> None:
    assert host.file("/").is_directory


@pytest.mark.control("QN-DOV-01")
def test_probe_error() -> None:
    raise ProbeError("endpoint unreachable: the check is unproven")


@pytest.mark.control("QN-DOV-02")
def test_setup_error(broken_fixture: None) -> None:
    assert broken_fixture is None
