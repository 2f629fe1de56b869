"""The drills' counting and client logic (qnprov/labclient.py, qnprov/labdrill.py), without a lab."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from qnprov import labclient, labdrill
from qnprov.errors import ConfigError
from qnprov.lab import LabConfig, LabHost


def test_tally_counts_exactly_once_duplicates_lost_and_unconfirmed() -> None:
    accepted = {"a@x", "b@x", "c@x", "d@x"}
    found = ["a@x", "b@x", "b@x", "b@x", "c@x", "z@x"]
    assert labclient.tally(accepted, found) == labclient.Tally(delivered=3, duplicates=2, lost=1, unconfirmed=1)
    assert labclient.tally(accepted, sorted(accepted)) == labclient.Tally(4, 0, 0, 0)
    assert labclient.tally(set(), []) == labclient.Tally(0, 0, 0, 0)


def test_parse_guids_reads_doveadm_tab_output() -> None:
    text = "mailbox\tguid\nINBOX\t0a1b\nINBOX\t0a1c\nSent\t77\n"
    assert labclient.parse_guids(text) == {("INBOX", "0a1b"), ("INBOX", "0a1c"), ("Sent", "77")}
    assert labclient.parse_guids("mailbox\tguid\n") == set()
    with pytest.raises(ConfigError):
        labclient.parse_guids("doveadm: Error: no such user\n")


def test_parse_message_ids_from_an_imap_fetch_answer() -> None:
    fetched = [(b"1 (BODY[HEADER.FIELDS (MESSAGE-ID)] {40}", b"Message-ID: <drill-ab-00001@quangninh.test>\r\n\r\n"),
               b")", (b"2 (BODY[HEADER.FIELDS (MESSAGE-ID)] {2}", b"\r\n"), b")",
               (b"3 (BODY[HEADER.FIELDS (MESSAGE-ID)] {40}", b"Message-Id:\r\n <drill-ab-00002@quangninh.test>\r\n")]
    assert labclient.parse_message_ids(fetched) == ["drill-ab-00001@quangninh.test", "drill-ab-00002@quangninh.test"]


class FakeSmtp:
    def __init__(self, log: list[tuple[str, str, str]], name: str, down: dict[str, bool]) -> None:
        self.log, self.name, self.down = log, name, down
        if down[name]:
            raise ConnectionRefusedError(111, "Connection refused")

    def send_message(self, msg):
        if self.down[self.name]:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        self.log.append((self.name, msg["Message-ID"], msg["To"]))
        return {}

    def quit(self) -> None:
        pass

    def close(self) -> None:
        pass


def _config() -> LabConfig:
    hosts = tuple(LabHost(n, f"qnprov-ha-{n}", f"{n}.quangninh.test", {}) for n in ("ha1", "ha2"))
    return LabConfig(Path("inventories/lab-ha"), hosts, "quangninh.test", "dc=quangninh,dc=test", (),
                     state=Path("/nonexistent"))


def test_stream_alternates_mtas_and_retries_on_the_other_when_one_refuses() -> None:
    log: list[tuple[str, str, str]] = []
    down = {"ha1": False, "ha2": False}
    lab = SimpleNamespace(config=_config(), password=lambda user: "pw",
                          smtp=lambda host, user, pw: FakeSmtp(log, host.name, down))
    stream = labclient.Stream(lab, "duclm@quangninh.test", ["annv@quangninh.test", "binhtt@quangninh.test"],
                             rate=20, duration=1, run="r1")
    fired: list[float] = []

    def outage() -> None:
        down["ha2"] = True
        fired.append(time.monotonic())

    for thread in stream.go([(0.5, outage)]):
        thread.join()
    assert stream.sent == 20 and len(stream.accepted) == 20 and fired
    assert {mid for _, mid, _ in log} == {f"<drill-r1-{i:05d}@quangninh.test>" for i in range(20)}
    # before the outage the odd messages preferred ha2; after it they went to ha1 instead
    assert stream.by_host["ha2"] >= 4 and stream.by_host["ha1"] + stream.by_host["ha2"] == 20
    assert stream.rerouted == sum(1 for i, (host, _, _) in enumerate(log) if i % 2 == 1 and host == "ha1") >= 4
    assert all("ha2" in e for e in stream.errors) and stream.errors
    # before the outage, every recipient got mail through each MTA
    assert {(host, to) for host, _, to in log[:6]} == {(h, r) for h in ("ha1", "ha2") for r in stream.recipients}


def test_stream_counts_a_message_both_mtas_refuse_as_sent_not_accepted() -> None:
    lab = SimpleNamespace(config=_config(), password=lambda user: "pw",
                          smtp=lambda host, user, pw: FakeSmtp([], host.name, {"ha1": True, "ha2": True}))
    stream = labclient.Stream(lab, "s@x", ["r@x"], rate=10, duration=0.3, run="r2")
    assert stream.go([]) == []
    assert stream.sent == 3 and stream.accepted == set() and len(stream.errors) == 6


def test_probe_until_reports_the_first_success_and_none_on_timeout() -> None:
    since = time.monotonic()
    seconds = labclient.probe_until(lambda: time.monotonic() - since > 0.3, since, 5, interval=0.05)
    assert seconds is not None and 0.3 <= seconds < 1.0
    assert labclient.probe_until(lambda: False, time.monotonic(), 0.3, interval=0.1) is None


def test_drill_result_document_has_the_issue_fields() -> None:
    doc = labclient.DrillResult("mta-down", sent=3, accepted=3, delivered=3,
                               timings={"stop_seconds": 1.23456, "login": None}).as_dict()
    assert {"name", "sent", "accepted", "delivered", "duplicates", "bounced", "lost", "timings", "passed"} <= set(doc)
    assert doc["timings"] == {"stop_seconds": 1.235, "login": None} and doc["passed"] is False


def test_an_unknown_drill_or_a_one_host_lab_is_refused() -> None:
    one = LabConfig(Path("inventories/lab"), _config().hosts[:1], "quangninh.test", "dc=quangninh,dc=test", ())
    with pytest.raises(ConfigError, match="at least two hosts"):
        labclient.Lab(one)


def test_run_reports_a_failing_drill_and_starts_a_host_it_left_stopped(monkeypatch) -> None:
    started: list[str] = []
    fake = SimpleNamespace(start=lambda host: started.append(host.name))
    monkeypatch.setattr(labdrill, "Lab", lambda config: fake)
    monkeypatch.setattr(labdrill, "container_state", lambda name: "exited" if name.endswith("ha2") else "running")

    def broken(lab):
        raise ConfigError("ha2: services not all active 300s after podman start")

    monkeypatch.setattr(labdrill, "drill_split_brain", broken)
    results = labdrill.run(_config(), ["split-brain", "no-such-drill"])
    assert [(r.name, r.passed) for r in results] == [("split-brain", False), ("no-such-drill", False)]
    assert results[0].error == "ConfigError: ha2: services not all active 300s after podman start"
    assert results[1].error is not None and "unknown drill 'no-such-drill'" in results[1].error
    assert started == ["ha2", "ha2"]


def test_synced_users_reads_the_replicator_status() -> None:
    status = ("username\tpriority\tfast sync\tfull sync\tsuccess sync\tfailed\n"
              "annv@quangninh.test\tnone\t00:00:05\t00:00:05\t00:00:05\t-\n"
              "duclm@quangninh.test\tnone\t-\t-\t-\t-\n"
              "BinhTT@quangninh.test\tnone\t01:00:00\t01:00:00\t01:00:00\ty\n")
    assert labdrill.synced_users(status) == {"annv@quangninh.test", "binhtt@quangninh.test"}
    assert labdrill.synced_users("doveadm: Error: connect(replicator) failed\n") == set()
