"""Bounded network probes the suite sends from the verify process to a host's ports.

Every probe has a hard time limit per operation and a fixed number of connections.
They run from the machine that runs verify, never from inside the host: traffic to
the lab's published loopback ports reaches the container from the podman bridge
gateway, which is outside ``mynetworks`` and outside Dovecot's trusted networks,
so relay, smuggling and plaintext-auth controls are really exercised.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

#: Seconds to wait for any single reply. postscreen's greet delay (6 s by default) fits.
REPLY_TIMEOUT = 15.0
#: Longest reply we read (bytes); a hostile or broken server can't make us buffer more.
MAX_REPLY_BYTES = 64 * 1024


class ProbeError(Exception):
    """A probe could not be carried out (the check is unproven, not failed)."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class LineChannel:
    """A socket that reads CRLF-terminated lines with a size cap."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> str:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise ProbeError("reply larger than the probe accepts")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed by server")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        if self._buffer:
            raise ProbeError("server sent data before the TLS handshake (STARTTLS injection?)")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)


class SmtpClient(LineChannel):
    def reply(self) -> Reply:
        lines: list[str] = []
        while True:
            line = self.read_line()
            if len(line) < 3 or not line[:3].isdigit():
                raise ProbeError(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line)
            if len(line) == 3 or line[3] != "-":
                return Reply(int(line[:3]), tuple(lines))
            if len(lines) > 200:
                raise ProbeError("SMTP reply with too many lines")

    def command(self, line: str) -> Reply:
        self.send(line.encode("ascii") + b"\r\n")
        return self.reply()

    def ehlo(self, name: str) -> Reply:
        return self.command(f"EHLO {name}")


def extensions(ehlo: Reply) -> set[str]:
    """EHLO keywords (upper case), e.g. {'STARTTLS', 'AUTH', 'PIPELINING'}."""
    names = set()
    for line in ehlo.lines[1:]:
        keyword = line[4:].split(" ", 1)[0].upper()
        if keyword:
            names.add(keyword)
    return names


@contextlib.contextmanager
def connect(host: str, port: int, timeout: float = REPLY_TIMEOUT) -> Iterator[socket.socket]:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        sock.settimeout(timeout)
        yield sock
    finally:
        with contextlib.suppress(OSError):
            sock.close()


@contextlib.contextmanager
def smtp_session(host: str, port: int, *, implicit_tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> Iterator[tuple[SmtpClient, Reply]]:
    """Open an SMTP session; yields the client and the server's greeting."""
    with connect(host, port) as raw:
        sock = implicit_tls.wrap_socket(raw, server_hostname=server_hostname) if implicit_tls else raw
        client = SmtpClient(sock)
        greeting = client.reply()
        try:
            yield client, greeting
        finally:
            with contextlib.suppress(OSError, ProbeError, ConnectionError):
                client.send(b"QUIT\r\n")


def verifying_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that checks the chain (against the lab CA when given) and the name."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def legacy_only_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers exactly one old protocol version (TLS 1.0 or 1.1).

    Security level 0 lifts the client's own ban on old protocols, so a completed
    handshake can only mean the server accepted the old version.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated on purpose: we offer them to see them refused
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    return context


class ImapClient(LineChannel):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._tag = 0

    def command(self, text: str) -> tuple[list[str], str]:
        """Send a tagged command; return (untagged lines, tagged completion line)."""
        self._tag += 1
        tag = f"q{self._tag}"
        self.send(f"{tag} {text}\r\n".encode())
        untagged: list[str] = []
        while True:
            line = self.read_line()
            if line.startswith(tag + " "):
                return untagged, line[len(tag) + 1 :]
            untagged.append(line)
            if len(untagged) > 200:
                raise ProbeError("IMAP reply with too many lines")


#: How long to wait for a reply that must NOT come (bare-LF end of data).
SILENCE_WINDOW = 3.0


def bare_lf_end_of_data(host: str, port: int, *, helo: str, recipient: str) -> Reply | None:
    """Send ``<LF>.<LF>`` inside DATA and return the server's reply to it, or None if silent.

    A server vulnerable to SMTP smuggling ends the message at the bare-LF dot and answers
    (250); a protected one waits for the real ``<CR><LF>.<CR><LF>`` (silence) or rejects
    the bare LF (5xx). The connection is then dropped inside DATA, so nothing is queued.
    """
    with smtp_session(host, port) as (client, _):
        client.ehlo(helo)
        client.command("MAIL FROM:<>")
        rcpt = client.command(f"RCPT TO:<{recipient}>")
        if rcpt.code != 250:
            raise ProbeError(f"probe recipient refused ({rcpt.text!r}); smuggling probe needs an accepted recipient")
        if client.command("DATA").code != 354:
            raise ProbeError("DATA refused; smuggling probe inconclusive")
        client.send(b"Subject: qnprov smuggling probe\r\n\r\nprobe\n.\nNOOP\r\n")
        client.sock.settimeout(SILENCE_WINDOW)
        try:
            reply: Reply | None = client.reply()
        except (TimeoutError, ConnectionError):
            reply = None  # silent, or it hung up on the bare LF: not smuggled
        with contextlib.suppress(OSError):
            client.sock.close()
    return reply
