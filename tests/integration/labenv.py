"""What the integration suites read from the environment of a deployed host.

``qnprov.lab.test_environment`` writes these variables (the conftest's lab
fixture, or molecule's verify step); a missing one fails the test, never skips.
"""

from __future__ import annotations

import os

import pytest


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: bring the lab up (qnprov lab up, or run through "
                    "tests/integration/conftest.py) or export it", pytrace=False)
    return value
