"""The lab as a client sees it, for the failure drills (:mod:`qnprov.labdrill`).

:class:`Lab` reaches the lab's hosts only on their published loopback ports
(submission, IMAPS, LDAPS) with only the lab CA trusted, and drives the containers
with ``podman`` (stop, start, exec). :class:`Stream` submits a bounded stream of
messages with unique Message-IDs, alternating the MTA it prefers and retrying on the
other when one refuses, as a client with two MX hosts does. Mail is counted by
Message-ID in the recipients' mailboxes (:func:`tally`).
"""

from __future__ import annotations

import imaplib
import ipaddress
import json
import re
import smtplib
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

from ldap3 import NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from qnprov import inventory as inventory_mod
from qnprov.errors import ConfigError
from qnprov.lab import ADMIN_SECRET, LabConfig, LabHost, container_state, podman
from qnprov.labcheck import service_states, tls_context

MAIL_ERRORS = (smtplib.SMTPException, imaplib.IMAP4.error, OSError, ssl.SSLError)
_MSGID = re.compile(rb"<([^<>\s]+)>")
#: How long a drill client avoids an MTA it could not reach before it prefers it again.
DEAD_HOST_SECONDS = 5.0
#: How long a drill client waits for an MTA to answer a connection.
CONNECT_TIMEOUT_SECONDS = 3.0


@dataclass
class DrillResult:
    name: str
    passed: bool = False
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    duplicates: int = 0
    bounced: int = 0
    lost: int = 0
    timings: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["timings"] = {k: (round(v, 3) if v is not None else None) for k, v in self.timings.items()}
        return doc


@dataclass(frozen=True)
class Tally:
    delivered: int     # accepted Message-IDs found at least once
    duplicates: int    # extra copies of any Message-ID
    lost: int          # accepted, found nowhere
    unconfirmed: int   # found, though no MTA said 250 for it (the client saw an error)


def tally(accepted: set[str], found: list[str]) -> Tally:
    """Count the Message-IDs ``found`` in the mailboxes against the ``accepted`` ones."""
    counts = Counter(found)
    delivered = sum(1 for mid in accepted if counts[mid])
    return Tally(delivered, sum(n - 1 for n in counts.values() if n > 1), len(accepted) - delivered,
                 sum(1 for mid in counts if mid not in accepted))


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty), rounded to ms."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return round(ordered[int(rank) - 1], 3)


def parse_guids(text: str) -> set[tuple[str, str]]:
    """``doveadm -f tab fetch -u USER 'mailbox guid' ALL``: the (mailbox, GUID) pairs."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].split("\t") != ["mailbox", "guid"]:
        raise ConfigError(f"unexpected doveadm fetch output: {text[:120]!r}")
    return {(parts[0], parts[1]) for parts in (line.split("\t") for line in lines[1:]) if len(parts) == 2}


def parse_message_ids(fetched: list[Any]) -> list[str]:
    """The Message-IDs of an IMAP ``FETCH (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])`` answer."""
    ids = []
    for item in fetched:
        if isinstance(item, tuple) and len(item) > 1:
            match = _MSGID.search(item[1])
            if match:
                ids.append(match.group(1).decode())
    return ids


class NamedSMTP(smtplib.SMTP):
    """An SMTP session to an address whose certificate STARTTLS checks against ``tls_name``
    (smtplib checks the name it connected to), so no resolver is asked for the name."""

    def __init__(self, tls_name: str, *args: Any, **kwargs: Any) -> None:
        self.tls_name = tls_name
        super().__init__(*args, **kwargs)

    def connect(self, host: str = "localhost", port: int = 0,
                source_address: Any = None) -> tuple[int, bytes]:
        answer = super().connect(host, port, source_address)
        self._host = self.tls_name
        return answer


class Lab:
    """The lab as a client sees it: hosts, demo accounts with their homes and passwords."""

    def __init__(self, config: LabConfig) -> None:
        if len(config.hosts) < 2:
            raise ConfigError(f"{config.inventory}: the drills need a lab of at least two hosts (lab-ha)")
        self.config = config
        raw = inventory_mod.load(config.inventory).group_vars("all").get("openldap_accounts") or []
        self.homes = {str(a["mail"]).lower(): str(a.get("mail_host") or "").lower() for a in raw}
        self.context = tls_context(config.ca_cert)
        self.dn_cache: dict[str, str] = {}

    def password(self, address: str) -> str:
        account = next(a for a in self.config.accounts if a.address == address)
        return self.config.secret(f"account_{account.employee_id}")

    def homed_on(self, host: LabHost) -> list[str]:
        return [a.address for a in self.config.accounts if self.homes.get(a.address.lower()) == host.hostname]

    def ldap(self, host: LabHost, bind_dn: str, password: str) -> Connection:
        tls = Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT, ca_certs_file=str(self.config.ca_cert),
                  valid_names=[host.hostname, "127.0.0.1"])
        server = Server("127.0.0.1", port=host.publish["ldap"][0], use_ssl=True, tls=tls, get_info=NONE,
                        connect_timeout=5)
        return Connection(server, bind_dn, password, auto_bind=True, raise_exceptions=True, receive_timeout=15)

    def admin(self, host: LabHost) -> Connection:
        return self.ldap(host, f"cn=admin,{self.config.base_dn}", self.config.secret(ADMIN_SECRET))

    def dn_of(self, address: str) -> str:
        conn = self.admin(self.config.hosts[0])
        try:
            conn.search(self.config.base_dn, f"(mail={escape_filter_chars(address)})", attributes=[])
            if len(conn.entries) != 1:
                raise ConfigError(f"{address}: {len(conn.entries)} entries in the directory, expected one")
            return str(conn.entries[0].entry_dn)
        finally:
            conn.unbind()

    def smtp(self, host: LabHost, user: str, password: str, source: str | None = None) -> smtplib.SMTP:
        """A submission session as ``user``: on the published loopback port, or, from a
        ``source`` address on the lab network, straight to the host's own address (the
        certificate is checked against the host's name either way)."""
        if source is None:
            smtp = smtplib.SMTP("127.0.0.1", host.publish["submission"][0], local_hostname="drill.qnprov.test",
                                timeout=15)
        else:
            if host.ip is None:
                raise ConfigError(f"{host.name} has no address on a lab network to submit to from {source}")
            # a stopped host's address answers nothing: give up connecting after 3 s (the
            # client then sends to the other MTA), but allow a live session 15 s per reply
            smtp = NamedSMTP(host.hostname, host.ip, host.publish["submission"][1],
                             local_hostname="drill.qnprov.test", timeout=CONNECT_TIMEOUT_SECONDS,
                             source_address=(source, 0))
            smtp.timeout = 15
            if smtp.sock is not None:
                smtp.sock.settimeout(15)
        try:
            smtp.starttls(context=self.context)
            smtp.login(user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def imap(self, host: LabHost, user: str, password: str) -> imaplib.IMAP4_SSL:
        imap = imaplib.IMAP4_SSL("127.0.0.1", host.publish["imaps"][0], ssl_context=self.context, timeout=15)
        try:
            imap.login(user, password)
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def login_ok(self, kind: str, host: LabHost, user: str, password: str) -> bool:
        try:
            if kind == "smtp":
                self.smtp(host, user, password).quit()
            elif kind == "imap":
                self.imap(host, user, password).logout()
            else:
                self.ldap(host, self.dn_cache[user], password).unbind()
            return True
        except (*MAIL_ERRORS, LDAPException):
            return False

    def message_ids(self, host: LabHost, user: str, prefix: str) -> list[str]:
        """Every Message-ID containing ``prefix`` in ``user``'s INBOX, read through ``host``."""
        imap = self.imap(host, user, self.password(user))
        try:
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "HEADER", "Message-ID", prefix)
            numbers = data[0].split() if data and data[0] else []
            if not numbers:
                return []
            _, fetched = imap.fetch(b",".join(numbers).decode(), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            return [mid for mid in parse_message_ids(fetched) if prefix in mid]
        finally:
            imap.logout()

    def bounces(self, host: LabHost, user: str, token: str) -> int:
        imap = self.imap(host, user, self.password(user))
        try:
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "TEXT", token)
            return len(data[0].split()) if data and data[0] else 0
        finally:
            imap.logout()

    def exec(self, host: LabHost, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return podman("exec", host.container, *argv, check=False, timeout=timeout)

    def flush_queues(self) -> None:
        for host in self.config.hosts:
            if container_state(host.container) == "running":
                self.exec(host, "postqueue", "-f", timeout=30)

    def stop(self, host: LabHost) -> None:
        podman("stop", "-t", "10", host.container, timeout=120)

    def start(self, host: LabHost, timeout: float = 300) -> float:
        """Start ``host``'s container; seconds until every service of it is active again."""
        began = time.monotonic()
        podman("start", host.container, timeout=120)
        while time.monotonic() - began < timeout:
            if container_state(host.container) == "running" and \
                    set(service_states(host.container).values()) == {"active"}:
                return time.monotonic() - began
            time.sleep(2)
        raise ConfigError(f"{host.name}: services not all active {timeout:.0f}s after podman start")


def probe_until(attempt: Callable[[], bool], since: float, timeout: float, interval: float = 0.25) -> float | None:
    """Start ``attempt`` every ``interval`` s (failed logins are delayed by the server, so
    attempts overlap) until one succeeds; seconds from ``since`` to its success, or None."""
    done: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        if attempt():
            with lock:
                done.append(time.monotonic())

    threads = []
    while time.monotonic() - since < timeout and not done:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(interval)
    for thread in threads:
        thread.join(timeout=20)
    return min(done) - since if done else None


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

