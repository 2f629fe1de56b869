"""A stand-in scanner test: deselected by --no-scanners."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.scanner
@pytest.mark.control("QN-OS-09")
def test_lynis_hardening_index(record_property: Any) -> None:
    record_property("lynis_hardening_index", 91)
    assert 91 >= 85
