"""The testbed and the ansible-runner wrapper against a real systemd container."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qnprov import runner, testbed
from qnprov_testing.containers import systemd_container


@pytest.fixture(scope="module")
def container():
    with systemd_container("qnprov-test-runner-") as name:
        yield name


def test_prepare_host_is_idempotent():
    testbed.prepare_host()
    again = testbed.prepare_host()
    assert again.installed == () and again.config_changed is False


def test_image_is_current_and_not_rebuilt():
    assert testbed.image_version() == testbed.IMAGE_VERSION
    assert testbed.build_image() is False


def test_playbook_events_and_per_host_stats(container: str, tmp_path: Path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "reach the host", "ansible.builtin.ping": {}},
            {"name": "change something", "ansible.builtin.copy": {"dest": "/etc/qnprov-probe", "content": "x\n",
                                                                  "mode": "0644"}},
            {"name": "fail on purpose", "ansible.builtin.command": "false", "changed_when": False},
        ]}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"probe": {
        "ansible_connection": "containers.podman.podman", "ansible_host": container,
        "ansible_python_interpreter": "/usr/bin/python3"}}}}))
    events: list[runner.ProgressEvent] = []
    result = runner.run_playbook(playbook, inventory=inventory, on_event=events.append)
    assert result.rc != 0 and result.failed
    assert result.hosts["probe"].ok == 2
    assert result.hosts["probe"].changed == 1
    assert result.hosts["probe"].failed == 1
    assert [e.task for e in events if e.kind == "task"] == ["reach the host", "change something", "fail on purpose"]
    assert [(f.host, f.task) for f in result.failures] == [("probe", "fail on purpose")]
    assert result.as_json() == {"hosts": {"probe": {"ok": 2, "changed": 1, "failed": 1, "unreachable": 0}},
                                "rc": result.rc, "changed_tasks": [{"host": "probe", "task": "change something"}],
                                "failures": [{"host": "probe", "task": "fail on purpose",
                                              "message": "non-zero return code"}]}

    again = runner.run_playbook(playbook, inventory=inventory, check=True)
    assert again.hosts["probe"].changed == 0, "the file is already in place"
