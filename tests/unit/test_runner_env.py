"""ansible_env: the Ansible tools beside qnprov's interpreter are found without an activated venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from qnprov import runner


def test_ansible_env_puts_the_interpreters_bin_dir_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = runner.ansible_env()
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin", "/bin"]


def test_ansible_env_leaves_a_path_that_already_has_it(monkeypatch):
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin"]))
    assert "PATH" not in runner.ansible_env()
