"""Fixtures every test directory shares.

``postfix_tool`` runs the host's Postfix binaries (postmap, postconf, postfix)
against a private, empty ``config_directory``: the tests never read the host's
/etc/postfix, which scripts/bootstrap.sh deliberately leaves unconfigured.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest

PostfixTool = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def postfix_tool(tmp_path_factory: pytest.TempPathFactory) -> PostfixTool:
    """Run a Postfix tool; ``-c`` defaults to a private directory holding an empty main.cf."""
    private = tmp_path_factory.mktemp("postfix-config")
    (private / "main.cf").write_text("", encoding="utf-8")

    def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        binary = shutil.which(tool, path="/usr/sbin:/usr/bin")
        if binary is None:
            pytest.fail(f"{tool} not installed; scripts/bootstrap.sh installs postfix on the test host")
        options = [] if "-c" in args else ["-c", str(private)]
        return subprocess.run([binary, *options, *args], capture_output=True, text=True, check=False, timeout=60)

    return run

