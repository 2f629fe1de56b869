"""Is a mail store up, and has it synced these accounts? Asked of the store's own replicator.

``doveadm -f tab replicator status '*'`` on the store lists every user its replicator
knows, with the time since the last fast, full and successful dsync and whether the
last attempt failed (Dovecot 2.3 src/doveadm/doveadm-replicator.c: ``-`` for a time
that never happened, ``y`` in ``failed``). The command runs on the store over the
inventory's deploy connection (an Ansible ad-hoc ``command`` with the inventory's
SSH settings and become), the way ``qnprov deploy`` reaches the host.

A store is *down* when the connection fails or doveadm cannot reach the replicator;
an account is *synced* on a store when that store's replicator has a successful sync
for it (the replica then holds a copy of the mailbox).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qnprov import inventory as inventory_mod
from qnprov import paths
from qnprov.errors import ConfigError, ExternalError

#: The largest command result the probe takes back (characters of the runner's event).
MAX_RESULT_CHARS = 64 * 1024 * 1024
STATUS_ARGV = ("doveadm", "-f", "tab", "replicator", "status", "*")
_HMS = re.compile(r"^(\d+):(\d{2}):(\d{2})$")


class StoreDown(ExternalError):
    """The store cannot be reached, or its replicator does not answer."""


@dataclass(frozen=True)
class SyncState:
    user: str
    last_success_seconds: int | None  # seconds since the last successful sync; None: never
    last_failed: bool


def _seconds(value: str) -> int | None:
    match = _HMS.match(value.strip())
    if not match:
        return None
    hours, minutes, seconds = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_replicator_status(text: str) -> dict[str, SyncState]:
    """``doveadm -f tab replicator status '*'`` output, keyed by lower-cased user name."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return {}
    header = lines[0].split("\t")
    if "username" not in header or "success sync" not in header or "failed" not in header:
        raise ExternalError(f"unexpected doveadm replicator status header: {lines[0][:120]!r}")
    user_at, success_at, failed_at = header.index("username"), header.index("success sync"), header.index("failed")
    states: dict[str, SyncState] = {}
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ExternalError(f"unexpected doveadm replicator status line: {line[:120]!r}")
        user = fields[user_at].lower()
        states[user] = SyncState(user, _seconds(fields[success_at]), fields[failed_at].strip() == "y")
    return states


class StoreProbe(Protocol):
    def replicator_status(self, store: str) -> dict[str, SyncState]:
        """The store's replicator view; raises :class:`StoreDown` when it cannot be had."""

    def command(self, store: str, argv: tuple[str, ...]) -> str:
        """Run ``argv`` on the store's host; its stdout. :class:`StoreDown` when it fails."""


def inventory_host_for(store: str, host_vars: Mapping[str, Mapping[str, Any]]) -> str:
    """The inventory host that is ``store``: same name, or a host whose hostname variable is it."""
    wanted = store.lower()
    for host, variables in host_vars.items():
        names = {host.lower()} | {str(variables.get(key, "")).lower()
                                  for key in ("dovecot_store_name", "qnprov_lab_hostname", "qnprov_hostname")}
        if wanted in names:
            return host
    short = wanted.split(".", 1)[0]
    matches = [host for host in host_vars if host.lower() == short]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(f"no inventory host is the mail store {store} (name it {store}, {short}, "
                      "or set dovecot_store_name on it)")


class AnsibleProbe:
    """Runs the status command on the store's inventory host with ansible-runner (ad hoc)."""

    def __init__(self, inventory: str, *, timeout: int = 60) -> None:
        self.inventory_path = paths.resolve_inventory(inventory)
        self.timeout = timeout

    def _host(self, store: str) -> str:
        loaded = inventory_mod.load(self.inventory_path)
        return inventory_host_for(store, {host: loaded.literal_vars(host) for host in loaded.hosts})

    def replicator_status(self, store: str) -> dict[str, SyncState]:
        return parse_replicator_status(self.run(self._host(store), STATUS_ARGV))

    def command(self, store: str, argv: tuple[str, ...]) -> str:
        return self.run(self._host(store), argv)

    def run(self, host: str, argv: tuple[str, ...]) -> str:
        import shutil
        import tempfile

        import ansible_runner

        from qnprov.runner import ansible_env

        outcome: dict[str, Any] = {}

        def handle(event: dict[str, Any]) -> bool:
            kind = event.get("event", "")
            data = event.get("event_data") or {}
            if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable") and data.get("host") == host:
                outcome["kind"] = kind
                outcome["res"] = data.get("res") or {}
            return False  # keep nothing on disk

        # ansible-runner's callback replaces a result bigger than MAX_EVENT_RES characters
        # (700,000 by default) with {}: the replicator status of a store of 20,000 accounts
        # is bigger than that (its stdout comes twice, as text and as lines).
        env = {**ansible_env(), "MAX_EVENT_RES": str(MAX_RESULT_CHARS)}
        private = Path(tempfile.mkdtemp(prefix="qnprov-store-probe-"))
        private.chmod(0o700)
        try:
            runner = ansible_runner.run(
                private_data_dir=str(private), host_pattern=host, inventory=str(self.inventory_path),
                module="ansible.builtin.command", module_args=shlex.join(argv), envvars=env,
                event_handler=handle, quiet=True, suppress_env_files=True, timeout=self.timeout)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        res = outcome.get("res") or {}
        if outcome.get("kind") == "runner_on_ok" and "rc" not in res:
            # a result with no rc is one the runner dropped: never read that as empty output
            raise ExternalError(f"{host}: {argv[0]} answered, but its output did not come back whole "
                                f"(over {MAX_RESULT_CHARS} characters?)")
        if outcome.get("kind") == "runner_on_ok" and res.get("rc", 0) == 0:
            return str(res.get("stdout", ""))
        why = (res.get("stderr") or res.get("msg") or "").strip().splitlines()
        reason = why[-1][:200] if why else f"ansible-runner ended {runner.status} (rc {runner.rc})"
        raise StoreDown(f"{host}: {reason}")
