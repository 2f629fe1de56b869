"""Quarantine commands: pure parsing/validation on data fixtures (the real hold queue is exercised in
test_milter_postfix.py::test_oversize_message_held_then_released_and_deleted)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from qnprov.errors import ExternalError, InputError
from qnprov.policy.quarantine import (
    LocalExecutor,
    PodmanExecutor,
    Quarantine,
    SshExecutor,
    executor_for,
    parse_postqueue_json,
    validate_queue_ids,
)

POSTQUEUE_J = "\n".join(json.dumps(entry) for entry in [
    {"queue_name": "hold", "queue_id": "4F2A1212345", "arrival_time": 1764446400, "message_size": 2048,
     "forced_expire": False, "sender": "a@quangninh.test",
     "recipients": [{"address": "b@quangninh.test"}, {"address": "c@quangninh.test"}]},
    {"queue_name": "deferred", "queue_id": "5B3C1212346", "arrival_time": 1764446401, "message_size": 100,
     "sender": "x@quangninh.test", "recipients": [{"address": "y@example.org", "delay_reason": "timeout"}]},
]) + "\n"


@dataclass
class RecordingExecutor:
    """Stands in for the mail host: returns recorded postqueue output and remembers what ran."""

    stdout: str
    ran: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.ran.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, self.stdout if argv[0] == "postqueue" else "", "")


def test_only_held_messages_are_listed() -> None:
    [held] = parse_postqueue_json(POSTQUEUE_J)
    assert held.queue_id == "4F2A1212345"
    assert held.recipients == ("b@quangninh.test", "c@quangninh.test")
    assert held.to_json()["arrival_time"] == "2025-11-29T20:00:00+00:00"


def test_garbage_from_postqueue_is_an_external_error() -> None:
    with pytest.raises(ExternalError, match="not JSON"):
        parse_postqueue_json("postqueue: fatal: whatever\n")


@pytest.mark.parametrize("bad", ["ALL", "-d", "4F2A1; rm -rf /", "", "../../x", "x" * 40])
def test_queue_ids_are_validated(bad: str) -> None:
    with pytest.raises(InputError):
        validate_queue_ids([bad])


def test_release_and_delete_touch_only_held_ids_in_the_hold_queue() -> None:
    executor = RecordingExecutor(POSTQUEUE_J)
    quarantine = Quarantine(executor, config_dir="/etc/postfix-in")
    done, missing = quarantine.release(["4F2A1212345", "5B3C1212346"])
    assert (done, missing) == (["4F2A1212345"], ["5B3C1212346"])
    assert ["postsuper", "-c", "/etc/postfix-in", "-H", "4F2A1212345"] in executor.ran
    quarantine.delete(["4F2A1212345"])
    assert executor.ran[-1] == ["postsuper", "-c", "/etc/postfix-in", "-d", "4F2A1212345", "hold"]
    assert not any("5B3C1212346" in argv for argv in executor.ran)


def test_executor_choice() -> None:
    assert isinstance(executor_for(None, None), LocalExecutor)
    assert executor_for("qnprov-lab-mail1", None) == PodmanExecutor("qnprov-lab-mail1")
    assert executor_for(None, "mail1.example") == SshExecutor("mail1.example")
    with pytest.raises(InputError):
        executor_for("c", "h")


def test_local_executor_reports_a_missing_program() -> None:
    with pytest.raises(ExternalError):
        LocalExecutor().run(["/nonexistent/postqueue", "-j"])
