"""Fixtures for the controls tests."""

from __future__ import annotations

import pytest
from controls_data import small_catalogue_data

from qnprov.controls.catalogue import Catalogue


@pytest.fixture
def small_catalogue() -> Catalogue:
    return small_catalogue_data()

# The fixture suite is run by test_verify_run.py in its own pytest process, as verify runs
# the packaged suite; it must not be collected as part of this test run.
collect_ignore = ["fixture_suite"]
