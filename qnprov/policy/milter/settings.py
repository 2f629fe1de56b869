"""What ``qnprov milter`` is told on its command line, and the milter's fixed names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qnprov.errors import ConfigError
from qnprov.policy.audit import (
    FsyncPolicy,
)

OnError = Literal["tempfail", "accept", "reject"]
OnOversize = Literal["quarantine", "reject", "tempfail"]
MILTER_NAME = "qnprov"
POLICY_HEADER = "X-QN-Policy"
REPLY_LINE_LIMIT = 480  # RFC 5321 reply lines are at most 512 octets with the codes


@dataclass(frozen=True)
class MilterSettings:
    """Everything ``qnprov milter`` is told on its command line."""

    socket: str = "unix:/run/qnprov/milter.sock"
    workers: int = 2
    bundle: Path | None = None
    overrides: Path | None = None
    audit_log: Path | None = None
    audit_fsync: FsyncPolicy = "always"
    agency_map: Path | None = None
    #: The emergency block list (``qnprov push block``); None or a missing file: no blocks.
    blocklist: Path | None = None
    max_body: int = 50 * 1024 * 1024
    timeout: float = 30.0
    on_error: OnError = "tempfail"
    on_oversize: OnOversize = "quarantine"
    #: ``{daemon_name}`` values of the listener that Dovecot re-injects Sieve
    #: redirects through (and of the pickup path); mail there is a forward.
    reinject_daemons: frozenset[str] = frozenset({"reinject"})
    #: How long libmilter waits on the MTA before giving up a connection.
    libmilter_timeout: int = 600
    socket_umask: int = 0o007

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.max_body < 1024:
            raise ConfigError(f"--max-body must be at least 1024 bytes, got {self.max_body}")
        if self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout}")
        if not (self.socket.startswith(("unix:", "local:", "inet:", "inet6:"))):
            raise ConfigError(f"--socket must look like unix:/path or inet:port@host, got {self.socket!r}")



def parse_reinject_daemons(values: Sequence[str]) -> frozenset[str]:
    names = {v.strip() for value in values for v in value.split(",") if v.strip()}
    return frozenset(names)
