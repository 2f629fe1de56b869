"""The lab as a client sees it, for the failure drills (:mod:`qnprov.labdrill`).

:class:`Lab` reaches the lab's hosts on their published loopback ports (submission,
IMAPS, LDAPS), or for the mail streams on their addresses on the lab network
(:mod:`qnprov.labstream`), always with only the lab CA trusted, and drives the
containers with ``podman`` (stop, start, exec). Mail is counted by Message-ID in the
recipients' mailboxes (:func:`tally`).
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
