"""The two-host lab (inventories/lab-ha), brought up once per test session.

`qnprov lab up -i lab-ha --json` converges both hosts (or re-converges a lab that is
already up, as `make test` leaves it after its background bring-up), seeds the demo
agencies and smoke-tests through both MTAs. Every module here shares that one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from qnprov import lab, paths

LAB_HA = paths.INVENTORIES_DIR / "lab-ha"


@pytest.fixture(scope="session")
def lab_ha_up() -> tuple[lab.LabConfig, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "qnprov", "lab", "up", "-i", "lab-ha", "--json"],
                          capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"qnprov lab up -i lab-ha failed ({proc.returncode}): {proc.stderr[-3000:]}", pytrace=False)
    return lab.load_lab_config(LAB_HA), json.loads(proc.stdout)
