"""A tiny control suite with known outcomes, run the way verify runs the real one."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--qnprov-target", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "control(id): control checked")
    config.addinivalue_line("markers", "scanner: external scanner")


@pytest.fixture
def broken_fixture() -> None:
    raise RuntimeError("fixture could not read host state")
