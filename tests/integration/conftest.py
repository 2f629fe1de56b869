"""Integration tests run against real services on the lab (or molecule) host.

When QNPROV_TEST_HOST is already set (molecule's verify step, or a developer
pointing the suite at a running host) the suite uses it as is. Otherwise the
session brings the lab up with the project's own command, `qnprov lab up`,
which converges (idempotently) and smoke-tests it, and exports the lab's
endpoints, accounts and CA for the test modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qnprov import lab, paths


@pytest.fixture(scope="session", autouse=True)
def lab_environment() -> dict[str, str]:
    if os.environ.get("QNPROV_TEST_HOST"):
        return {k: v for k, v in os.environ.items() if k.startswith("QNPROV_")}
    proc = subprocess.run([sys.executable, "-m", "qnprov", "lab", "up", "--json"], capture_output=True,
                          text=True, cwd=paths.PROJECT_ROOT, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"qnprov lab up failed ({proc.returncode}): {proc.stderr[-2000:]}", pytrace=False)
    doc = json.loads(proc.stdout)
    assert doc["running"] is True
    env = lab.test_environment(lab.load_lab_config())
    os.environ.update(env)
    return env
