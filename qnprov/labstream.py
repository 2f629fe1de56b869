"""The drills' mail stream (:class:`Stream`) and its clients on the lab network (:class:`Clients`).

A stream sends ``rate`` messages a second for ``duration`` s with unique Message-IDs,
from several clients in parallel, each with its own address on the lab network, across
both MTAs, retrying on the other MTA when one refuses, as a client with two MX hosts
does; :meth:`Stream.settle` then counts the Message-IDs in the recipients' mailboxes.
"""

from __future__ import annotations

import ipaddress
import json
import smtplib
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from qnprov.errors import ConfigError
from qnprov.lab import LabConfig, LabHost, podman
from qnprov.labclient import MAIL_ERRORS, DrillResult, Lab, tally

#: How long a drill client avoids an MTA it could not reach before it prefers it again.
DEAD_HOST_SECONDS = 5.0


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty), rounded to ms."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return round(ordered[int(rank) - 1], 3)


def bridge_interface(network: str) -> str:
    """The host's bridge interface of a podman network (CNI ``bridge`` or netavark
    ``network_interface`` in ``podman network inspect``)."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("bridge", "network_interface") and isinstance(item, str) and item:
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(podman("network", "inspect", network, timeout=30).stdout or "[]"))
    if not found:
        raise ConfigError(f"podman network {network}: no bridge interface in its inspect output")
    return found[0]


def client_addresses(subnet: str, taken: set[str], count: int) -> list[str]:
    """``count`` addresses from the top of ``subnet`` that no lab host uses: the drill's
    clients. (Podman hands out addresses from the bottom; the lab's are static and low.)"""
    net = ipaddress.ip_network(subnet)
    chosen: list[str] = []
    for offset in range(2, net.num_addresses - 1):
        address = str(net.network_address + (net.num_addresses - offset))
        if address not in taken:
            chosen.append(address)
        if len(chosen) == count:
            return chosen
    raise ConfigError(f"{subnet}: no room for {count} drill client addresses")


class Clients:
    """The drill's client addresses: ``count`` extra addresses on the lab network's bridge
    for the length of a stream, removed afterwards, so each MTA sees several clients, as in
    production, rather than every submission from the lab's one gateway address (which
    Postfix's anvil rightly throttles, ``smtpd_client_message_rate_limit``). A lab without
    its own network has one client: the host, through the published loopback ports."""

    def __init__(self, config: LabConfig, count: int) -> None:
        self.config, self.count = config, count
        self.addresses: list[str | None] = [None]
        self.added: list[str] = []
        self.device = ""

    def __enter__(self) -> Clients:
        network = self.config.network
        if network is None or any(h.ip is None for h in self.config.hosts):
            return self
        self.device = bridge_interface(network.name)
        taken = {str(h.ip) for h in self.config.hosts}
        wanted = client_addresses(network.subnet, taken, self.count)
        try:
            for address in wanted:
                proc = subprocess.run(["ip", "-4", "addr", "add", f"{address}/32", "dev", self.device],
                                      capture_output=True, text=True, timeout=30, check=False)
                if proc.returncode != 0 and "File exists" not in proc.stderr:
                    raise ConfigError(f"ip addr add {address} dev {self.device}: {proc.stderr.strip()}")
                self.added.append(address)
        except BaseException:
            self.__exit__()
            raise
        self.addresses = list(wanted)
        return self

    def __exit__(self, *_: object) -> None:
        for address in self.added:
            subprocess.run(["ip", "-4", "addr", "del", f"{address}/32", "dev", self.device],
                           capture_output=True, text=True, timeout=30, check=False)
        self.added = []


@dataclass
class Stream:
    """A bounded stream of submissions, ``rate`` messages a second for ``duration`` s, sent
    by ``workers`` clients in parallel (each from its own address on the lab network when
    there is one). Message i prefers MTA i mod 2 and goes to recipient (i // 2) mod n, so
    every recipient gets mail through every MTA. A client that cannot reach an MTA tries
    the other and avoids the first for ``DEAD_HOST_SECONDS``, as an MTA's SMTP client
    does."""

    lab: Lab
    sender: str
    recipients: list[str]
    rate: float
    duration: float
    workers: int = 16
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    sent: int = 0
    accepted: set[str] = field(default_factory=set)
    by_host: Counter[str] = field(default_factory=Counter)
    by_client: Counter[str] = field(default_factory=Counter)
    rerouted: int = 0
    errors: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def message(self, i: int) -> tuple[str, EmailMessage]:
        mid = f"drill-{self.run}-{i:05d}@{self.lab.config.domain}"
        msg = EmailMessage()
        msg["From"], msg["To"] = self.sender, self.recipients[(i // 2) % len(self.recipients)]
        msg["Subject"], msg["Message-ID"] = f"qnprov drill {self.run} #{i}", f"<{mid}>"
        msg.set_content(f"Drill {self.run}, message {i}.\n")
        return mid, msg

    def _client(self, index: int, source: str | None, start: float, total: int) -> None:
        hosts = list(self.lab.config.hosts)
        conns: dict[str, smtplib.SMTP] = {}
        dead_until: dict[str, float] = {}
        password = self.lab.password(self.sender)
        for i in range(index, total, self.workers):
            due = start + i / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            mid, msg = self.message(i)
            order = hosts[i % len(hosts):] + hosts[:i % len(hosts)]
            order.sort(key=lambda h: dead_until.get(h.name, 0.0) > now)  # stable: reachable first
            with self.lock:
                self.sent += 1
                self.lags.append(now - due)
            for rank, host in enumerate(order):
                try:
                    if host.name not in conns:
                        conns[host.name] = self.lab.smtp(host, self.sender, password, source=source)
                    if not conns[host.name].send_message(msg):
                        with self.lock:
                            self.accepted.add(mid)
                            self.by_host[host.name] += 1
                            self.by_client[source or "127.0.0.1"] += 1
                            self.rerouted += rank > 0
                        break
                except MAIL_ERRORS as exc:
                    dead_until[host.name] = time.monotonic() + DEAD_HOST_SECONDS
                    with self.lock:
                        self.errors.append(f"#{i} {host.name}: {str(exc)[:100]}")
                    conn = conns.pop(host.name, None)
                    if conn is not None:
                        conn.close()
        for conn in conns.values():
            try:
                conn.quit()
            except MAIL_ERRORS:
                conn.close()

    def go(self, events: list[tuple[float, Callable[[], None]]]) -> list[threading.Thread]:
        """Send the stream while firing each ``(seconds after the start, action)`` event in a
        thread of its own; the event threads are returned for the caller to join."""
        fired: list[threading.Thread] = []
        total = int(self.rate * self.duration)
        with Clients(self.lab.config, self.workers) as clients:
            start = time.monotonic()

            def timer() -> None:
                for at, action in sorted(events, key=lambda e: e[0]):
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    fired.append(threading.Thread(target=action, daemon=True))
                    fired[-1].start()

            timing = threading.Thread(target=timer, daemon=True)
            timing.start()
            senders = [threading.Thread(target=self._client, daemon=True,
                                        args=(w, clients.addresses[w % len(clients.addresses)], start, total))
                       for w in range(self.workers)]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join()
            self.elapsed = time.monotonic() - start
            timing.join()  # events past the end still happen
        return fired

    def settle(self, result: DrillResult, via: LabHost, timeout: float = 300,
               then: Callable[[], None] | None = None) -> None:
        """Wait for every accepted message (flushing the queues), run ``then`` (the runbook's
        step once the queues are empty), then count into ``result``."""
        began = time.monotonic()
        found: list[str] = []

        def read() -> list[str]:
            return [m for r in self.recipients for m in self.lab.message_ids(via, r, f"drill-{self.run}-")]

        while True:
            found = read()
            if tally(self.accepted, found).lost == 0 or time.monotonic() - began > timeout:
                break
            self.lab.flush_queues()
            time.sleep(5)
        result.timings["delivery_wait_seconds"] = time.monotonic() - began
        if then is not None:
            result.details["duplicates_before_runbook"] = tally(self.accepted, found).duplicates
            then()
            found = read()
        counted = tally(self.accepted, found)
        result.sent, result.accepted = self.sent, len(self.accepted)
        result.delivered, result.duplicates, result.lost = counted.delivered, counted.duplicates, counted.lost
        result.bounced = self.lab.bounces(via, self.sender, self.run)
        result.details.update({"run": self.run, "rate_per_second": self.rate, "duration_seconds": self.duration,
                               "accepted_by_host": dict(self.by_host), "rerouted_to_other_mta": self.rerouted,
                               "unconfirmed_delivered": counted.unconfirmed, "client_errors": self.errors[:10],
                               "client_error_count": len(self.errors), "clients": len(self.by_client) or 1,
                               "accepted_by_client": dict(self.by_client),
                               # the rate the stream kept: sent over the time it took to send
                               "achieved_rate_per_second": round(self.sent / self.elapsed, 2) if self.elapsed else None,
                               "send_lag_p50_seconds": percentile(self.lags, 50),
                               "send_lag_p99_seconds": percentile(self.lags, 99)})
        result.passed = (result.sent == result.accepted == result.delivered and not result.duplicates
                         and not result.bounced and not counted.unconfirmed)

