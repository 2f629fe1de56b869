"""The drills' counting and client logic (qnprov/labclient.py, qnprov/labdrill.py), without a lab."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from qnprov import labclient, labdrill, labstream
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
                          smtp=lambda host, user, pw, source=None: FakeSmtp(log, host.name, down))
    # two clients: client 0 sends the even messages (which prefer ha1), client 1 the odd ones
    stream = labstream.Stream(lab, "duclm@quangninh.test", ["annv@quangninh.test", "binhtt@quangninh.test"],
                             rate=20, duration=1, workers=2, run="r1")
    fired: list[float] = []

    def outage() -> None:
        down["ha2"] = True
        fired.append(time.monotonic())

    for thread in stream.go([(0.5, outage)]):
        thread.join()
    assert stream.sent == 20 and len(stream.accepted) == 20 and fired
    assert {mid for _, mid, _ in log} == {f"<drill-r1-{i:05d}@quangninh.test>" for i in range(20)}
    index = {mid: int(mid.split("-")[-1].split("@")[0]) for _, mid, _ in log}
    # before the outage the odd messages went to ha2; after it, every message went to ha1
    assert 4 <= stream.by_host["ha2"] <= 6 and stream.by_host["ha1"] + stream.by_host["ha2"] == 20
    assert all(index[mid] % 2 == 1 and index[mid] < 13 for host, mid, _ in log if host == "ha2")
    # the odd client met the dead MTA once, sent that message to ha1, then avoided ha2
    assert stream.rerouted == 1 and len(stream.errors) == 1 and "ha2" in stream.errors[0]
    # before the outage, every recipient got mail through each MTA
    assert {(host, to) for host, mid, to in log if index[mid] < 8} == \
        {(h, r) for h in ("ha1", "ha2") for r in stream.recipients}
    assert stream.by_client == {"127.0.0.1": 20} and len(stream.lags) == 20 and stream.elapsed > 0.9


def test_stream_sends_from_each_client_address_in_parallel(monkeypatch) -> None:
    sources: list[str | None] = []
    lab = SimpleNamespace(config=_config(), password=lambda user: "pw",
                          smtp=lambda host, user, pw, source=None: sources.append(source) or FakeSmtp(
                              [], host.name, {"ha1": False, "ha2": False}))

    class FakeClients:
        def __init__(self, config, count) -> None:
            self.addresses = [f"10.89.7.{254 - n}" for n in range(count)]

        def __enter__(self):
            return self

        def __exit__(self, *_):
            pass

    monkeypatch.setattr(labstream, "Clients", FakeClients)
    stream = labstream.Stream(lab, "s@x", ["r@x"], rate=40, duration=1, workers=4, run="r3")
    stream.go([])
    assert stream.sent == 40 and len(stream.accepted) == 40
    assert stream.by_client == {f"10.89.7.{254 - n}": 10 for n in range(4)}
    # each client opened one session to the MTA its messages prefer, and kept it
    assert sorted(sources) == [f"10.89.7.{251 + n}" for n in range(4)]


def test_stream_counts_a_message_both_mtas_refuse_as_sent_not_accepted() -> None:
    lab = SimpleNamespace(config=_config(), password=lambda user: "pw",
                          smtp=lambda host, user, pw, source=None: FakeSmtp([], host.name, {"ha1": True, "ha2": True}))
    stream = labstream.Stream(lab, "s@x", ["r@x"], rate=10, duration=0.3, run="r2")
    assert stream.go([]) == []
    assert stream.sent == 3 and stream.accepted == set() and len(stream.errors) == 6


def test_client_addresses_come_from_the_top_of_the_subnet_past_the_hosts() -> None:
    assert labstream.client_addresses("10.89.7.0/24", {"10.89.7.11", "10.89.7.253"}, 3) == \
        ["10.89.7.254", "10.89.7.252", "10.89.7.251"]
    # the gateway (first address), network and broadcast addresses are never handed out
    assert labstream.client_addresses("10.89.7.0/29", set(), 5) == [f"10.89.7.{n}" for n in (6, 5, 4, 3, 2)]
    with pytest.raises(ConfigError, match="no room for 6"):
        labstream.client_addresses("10.89.7.0/29", set(), 6)


@pytest.mark.parametrize("inspect", [
    '[{"name": "qnprov-ha", "network_interface": "podman1", "subnets": [{"subnet": "10.89.7.0/24"}]}]',
    '[{"cniVersion": "0.4.0", "name": "qnprov-ha", "plugins": [{"type": "bridge", "bridge": "cni-podman1"}]}]',
])
def test_bridge_interface_reads_netavark_and_cni_inspect_output(monkeypatch, inspect: str) -> None:
    monkeypatch.setattr(labstream, "podman", lambda *args, **kw: SimpleNamespace(stdout=inspect))
    assert labstream.bridge_interface("qnprov-ha") in ("podman1", "cni-podman1")
    monkeypatch.setattr(labstream, "podman", lambda *args, **kw: SimpleNamespace(stdout="[{}]"))
    with pytest.raises(ConfigError, match="no bridge interface"):
        labstream.bridge_interface("qnprov-ha")


def test_a_lab_without_its_own_network_has_one_client_the_host() -> None:
    with labstream.Clients(_config(), 16) as clients:
        assert clients.addresses == [None] and clients.added == []


def test_percentile_is_nearest_rank() -> None:
    assert labstream.percentile([], 50) is None
    values = [float(n) for n in range(1, 101)]
    assert (labstream.percentile(values, 50), labstream.percentile(values, 99)) == (50.0, 99.0)
    assert labstream.percentile([0.25], 99) == 0.25


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
