"""A second, no-change deploy of the lab changes nothing (issue 9, item 6).

The session fixture (tests/integration/conftest.py) has just converged the lab with
`qnprov lab up`; this deploys the same inventory again with the project's own command,
`qnprov deploy --json`, and reads its answer: 0 changed on every host, and no task named
in changed_tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qnprov import lab, paths

pytestmark = pytest.mark.lab

DEPLOY_TIMEOUT = 1800  # a no-change converge through the podman connection takes minutes


def test_second_deploy_reports_nothing_changed() -> None:
    config = lab.load_lab_config()
    if os.environ.get("QNPROV_TEST_HOST") not in {host.container for host in config.hosts}:
        pytest.fail("QNPROV_TEST_HOST is not a container of the lab inventory: the deploy would not reach "
                    "the host under test (molecule checks idempotence itself)", pytrace=False)
    # The converge that brought the lab up is the first deploy; this one must find nothing to do.
    proc = subprocess.run([sys.executable, "-m", "qnprov", "deploy", "-i", str(config.inventory), "--json"],
                          capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=DEPLOY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["rc"] == 0
    assert set(doc["hosts"]) == {host.name for host in config.hosts}
    assert doc["changed_tasks"] == [], f"a no-change deploy changed: {doc['changed_tasks']}"
    for name, stats in doc["hosts"].items():
        assert stats["ok"] > 0, f"{name}: nothing ran"
        assert (stats["changed"], stats["failed"], stats["unreachable"]) == (0, 0, 0), (name, stats)
