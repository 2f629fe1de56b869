"""Pipelined writes and fast paged reads over a bound ldap3 connection.

ldap3 opens the connection, negotiates TLS and binds; then this module sends up to
``window`` requests before it waits for the oldest answer. A bounded window matters:
unbounded asynchronous sending fills slapd's output buffers and it drops the
connection. Every failed result is raised as ldap3's ``LDAPOperationResult`` (as
``raise_exceptions=True`` would), after the requests already in flight have been
collected, so the caller knows exactly which operations reached the directory.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ldap3 import Connection
from ldap3.core.exceptions import LDAPOperationResult, LDAPSessionTerminatedByServerError
from ldap3.operation.search import compile_filter, parse_filter
from pyasn1.codec.ber import encoder as pyasn1_encoder

from qnprov.directory import ber

RESULT_NAMES = {0: "success", 3: "timeLimitExceeded", 4: "sizeLimitExceeded", 32: "noSuchObject",
                50: "insufficientAccessRights", 53: "unwillingToPerform", 65: "objectClassViolation",
                68: "entryAlreadyExists"}


def encode_filter(search_filter: str) -> bytes:
    """BER of an RFC 4515 filter string, built once with ldap3's own parser."""
    node = parse_filter(search_filter, None, False, False, None, False)
    return bytes(pyasn1_encoder.encode(compile_filter(node.elements[0])))


@dataclass
class Operation:
    """One request in flight: what it was, for progress and for error messages."""

    kind: str
    dn: str
    context: Any = field(default=None, repr=False)  # may hold an initial password: never printed


@dataclass
class PipelineStats:
    sent: int = 0
    completed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class LdapPipeline:
    """Send requests with at most ``window`` outstanding; results arrive in order of completion."""

    def __init__(self, connection: Connection, *, window: int = 128,
                 on_done: Callable[[Operation], None] | None = None) -> None:
        if not connection.bound:
            raise ValueError("the connection must be bound before pipelining")
        self._connection = connection
        self._socket: socket.socket = connection.socket
        self._window = max(1, window)
        self._on_done = on_done
        self._in_flight: dict[int, Operation] = {}
        self._buffer = bytearray()
        self._pos = 0
        self._first_error: LDAPOperationResult | None = None
        self._unsent: list[tuple[int, bytes]] = []
        self._unsent_bytes = 0
        self.stats = PipelineStats()

    # -- public operations -------------------------------------------------------

    def add(self, dn: str, attributes: Mapping[str, Sequence[ber.Value]], context: Any = None) -> None:
        self._send(lambda mid: ber.add_request(mid, dn, attributes), Operation("add", dn, context))

    def modify(self, dn: str, changes: Sequence[tuple[int, str, Sequence[ber.Value]]],
               context: Any = None) -> None:
        self._send(lambda mid: ber.modify_request(mid, dn, changes), Operation("modify", dn, context))

    def move(self, dn: str, new_rdn: str, new_superior: str, context: Any = None) -> None:
        self._send(lambda mid: ber.modify_dn_request(mid, dn, new_rdn, new_superior),
                   Operation("move", dn, context))

    def delete(self, dn: str, context: Any = None) -> None:
        self._send(lambda mid: ber.delete_request(mid, dn), Operation("delete", dn, context))

    def flush(self) -> None:
        """Wait for every outstanding request; raise the first failure, if any."""
        if self._first_error is None:
            self._push()
        else:
            self._discard_unsent()
        while self._in_flight:
            self._collect_one()
        if self._first_error is not None:
            error, self._first_error = self._first_error, None
            raise error

    # -- reads -------------------------------------------------------------------

    def paged_search(self, base: str, search_filter: str, attributes: Sequence[str],
                     page_size: int = 1000) -> Iterator[ber.SearchEntry]:
        """A subtree search read page by page (RFC 2696), decoded without ldap3's object layer."""
        self.flush()
        encoded_filter = encode_filter(search_filter)
        cookie = b""
        while True:
            message_id = self._connection.server.next_message_id()
            self._sendall(ber.search_request(message_id, base, encoded_filter, attributes, page_size, cookie))
            while True:
                message = self._next_message()
                if message is None or message.message_id != message_id:
                    continue
                if isinstance(message, ber.SearchEntry):
                    yield message
                    continue
                if message.code != 0:
                    raise LDAPOperationResult(result=message.code, description=RESULT_NAMES.get(message.code, ""),
                                              dn=base, message=message.message, response_type="searchResDone")
                cookie = message.paged_cookie
                break
            if not cookie:
                return

    # -- internals ---------------------------------------------------------------

    def _send(self, build: Callable[[int], bytes], operation: Operation) -> None:
        if self._first_error is not None:
            self.flush()  # stop at the first failure: nothing more is sent
        if len(self._in_flight) >= self._window:
            # Send what is buffered, then wait until half the window is free, so that
            # requests leave in batches (one system call each) rather than one by one.
            self._push()
            while len(self._in_flight) > self._window // 2 and self._first_error is None:
                self._collect_one()
            if self._first_error is not None:
                self.flush()
        message_id = self._connection.server.next_message_id()
        self._in_flight[message_id] = operation
        request = build(message_id)
        self._unsent.append((message_id, request))
        self._unsent_bytes += len(request)
        self.stats.sent += 1
        if self._unsent_bytes >= 256 * 1024:
            self._push()

    def _push(self) -> None:
        if self._unsent:
            data = b"".join(request for _, request in self._unsent)
            self._unsent.clear()
            self._unsent_bytes = 0
            self._sendall(data)

    def _discard_unsent(self) -> None:
        for message_id, _ in self._unsent:
            self._in_flight.pop(message_id, None)
            self.stats.sent -= 1
        self._unsent.clear()
        self._unsent_bytes = 0

    def _sendall(self, data: bytes) -> None:
        try:
            self._socket.sendall(data)
        except OSError as exc:
            raise LDAPSessionTerminatedByServerError(f"connection lost while sending: {exc}") from exc

    def _collect_one(self) -> None:
        message = self._next_message()
        if not isinstance(message, ber.LdapResult):
            return
        operation = self._in_flight.pop(message.message_id, None)
        if operation is None:
            return
        if message.code != 0:
            if self._first_error is None:
                self._first_error = LDAPOperationResult(
                    result=message.code, description=RESULT_NAMES.get(message.code, ""), dn=operation.dn,
                    message=f"{operation.kind} {operation.dn}: {message.message}", response_type=operation.kind)
            return
        self.stats.completed += 1
        self.stats.by_kind[operation.kind] = self.stats.by_kind.get(operation.kind, 0) + 1
        if self._on_done is not None:
            self._on_done(operation)

    def _next_message(self) -> ber.LdapResult | ber.SearchEntry | None:
        while True:
            size = ber.message_size(self._buffer, self._pos)
            if size != -1:
                raw = bytes(self._buffer[self._pos:self._pos + size])
                self._pos += size
                message = ber.decode_message(raw)
                if isinstance(message, ber.LdapResult) and message.message_id == 0:
                    raise LDAPSessionTerminatedByServerError(f"server ended the session: {message.message}")
                return message
            if self._pos:
                del self._buffer[:self._pos]  # keep only the incomplete tail
                self._pos = 0
            try:
                chunk = self._socket.recv(262144)
            except OSError as exc:
                raise LDAPSessionTerminatedByServerError(f"connection lost while reading: {exc}") from exc
            if not chunk:
                raise LDAPSessionTerminatedByServerError("server closed the connection")
            self._buffer += chunk
