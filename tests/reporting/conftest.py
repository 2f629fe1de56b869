"""The session's synthetic fleet (tests/reporting/fleet_data.py)."""

from __future__ import annotations

import pytest
from fleet_data import FIRST_DAY, HOSTS, Fleet

from qnprov_testing import audit_trails


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    trails = audit_trails.generate(HOSTS, 1500, FIRST_DAY, 40)
    return Fleet(trails, audit_trails.write_trails(tmp_path_factory.mktemp("fleet"), trails))
