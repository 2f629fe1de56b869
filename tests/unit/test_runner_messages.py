"""What a failed task says in `qnprov deploy`/`lab up` output (qnprov/runner.py)."""

from __future__ import annotations

from qnprov.runner import _failure_message


def test_a_failed_loop_names_each_failed_item_and_its_own_message() -> None:
    res = {"msg": "One or more items failed", "results": [
        {"item": "main.cf", "_ansible_item_label": "main.cf", "failed": False},
        {"item": "master.cf", "_ansible_item_label": "master.cf", "failed": True,
         "msg": "failed to validate", "stderr": "postconf: fatal: bad line"},
        {"item": "x", "_ansible_item_label": "secret-item", "failed": True, "_ansible_no_log": True, "msg": "pw=1"},
    ]}
    assert _failure_message(res) == "master.cf: failed to validate; (output hidden by no_log)"


def test_more_than_three_failed_items_are_counted() -> None:
    res = {"msg": "One or more items failed",
           "results": [{"_ansible_item_label": f"f{i}", "failed": True, "msg": "bad"} for i in range(5)]}
    assert _failure_message(res) == "f0: bad; f1: bad; f2: bad (+2 more)"


def test_a_plain_failure_keeps_its_last_message_line_and_no_log_hides_it() -> None:
    assert _failure_message({"msg": "first\nsecond line"}) == "second line"
    assert _failure_message({"msg": "password=hunter2", "_ansible_no_log": True}) == "(output hidden by no_log)"
