"""Hosts reached by pyinfra: the same hosts, users, keys and known_hosts as Ansible's runs.

:func:`connect` turns an inventory's hosts into pyinfra hosts with the ``@ssh`` connector,
built from :meth:`qnprov.inventory.Inventory.ssh_target` (the inventory's ``ansible_host``,
``ansible_port``, ``ansible_user``, key, ``UserKnownHostsFile`` and
``StrictHostKeyChecking``), and every command runs through sudo when the inventory says
``ansible_become``. The lab is reached over SSH exactly like production, so there is no
``@podman`` path: a push tested on the lab tested the production connection.

:class:`Remote` is what the push steps need from a host; :class:`PyinfraRemote` is the
real one, :class:`LocalRemote` runs the same shell on this machine (tests).
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qnprov.inventory import Inventory, SshTarget


def tail(text: str, lines: int = 4) -> str:
    """The last non-empty lines of a command's output, joined on one line (for error messages)."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


#: Hosts connected to and pushed to at once (one SSH connection and one thread each).
MAX_PARALLEL = 16


@dataclass(frozen=True)
class Ran:
    ok: bool
    stdout: str
    stderr: str


class Remote(Protocol):
    name: str

    def run(self, command: str) -> Ran: ...

    def put(self, content: bytes, path: str) -> None: ...

    def put_secret(self, content: bytes, path: str) -> None: ...


class LocalRemote:
    """Runs commands on this machine with ``sh -c`` (tests of the push steps)."""

    def __init__(self, name: str = "local", env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.env = dict(env) if env is not None else None
        self.commands: list[str] = []

    def run(self, command: str) -> Ran:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False, env=self.env)
        return Ran(done.returncode == 0, done.stdout, done.stderr)

    def put(self, content: bytes, path: str) -> None:
        with open(path, "wb") as handle:
            handle.write(content)

    def put_secret(self, content: bytes, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)


class PyinfraRemote:
    """One connected pyinfra host; every command through sudo when the inventory uses become."""

    def __init__(self, name: str, host: Any, sudo: bool) -> None:
        self.name = name
        self._host = host
        self._sudo = sudo

    def run(self, command: str) -> Ran:
        ok, output = self._host.run_shell_command(command, _sudo=self._sudo)
        return Ran(bool(ok), "\n".join(output.stdout_lines) + ("\n" if output.stdout_lines else ""),
                   "\n".join(output.stderr_lines))

    def put(self, content: bytes, path: str) -> None:
        if not self._host.put_file(io.BytesIO(content), path, _sudo=self._sudo):
            raise OSError(f"{self.name}: upload of {path} failed")

    def put_secret(self, content: bytes, path: str) -> None:
        """A key: through a 0700 directory of the SSH user (``mktemp -d``), never a shared temp file,
        into ``path``, which the caller created 0600 (``cp`` keeps an existing file's mode)."""
        if not self._sudo:
            self.put(content, path)
            return
        ok, output = self._host.run_shell_command("umask 077 && mktemp -d", _sudo=False)
        private = "\n".join(output.stdout_lines).strip()
        if not ok or not private.startswith("/"):
            raise OSError(f"{self.name}: cannot make a private upload directory")
        try:
            if not self._host.put_file(io.BytesIO(content), path, remote_temp_filename=f"{private}/upload",
                                       _sudo=True):
                raise OSError(f"{self.name}: upload of {path} failed")
        finally:
            self._host.run_shell_command(f"rm -rf -- {shlex.quote(private)}", _sudo=False)

    def close(self) -> None:
        self._host.disconnect()


def connector_data(target: SshTarget) -> dict[str, Any]:
    """pyinfra ``@ssh`` connector data for one inventory host (no agent, no other keys)."""
    data: dict[str, Any] = {
        "ssh_hostname": target.hostname,
        "ssh_port": target.port,
        "ssh_strict_host_key_checking": target.strict_host_key_checking,
        "ssh_allow_agent": False,
        "ssh_look_for_keys": target.key is None,
        "ssh_connect_retries": 1,
        # scp runs one exec channel per file and closes it; a kept-open SFTP session plus the
        # command channels goes over the MaxSessions 2 that os_hardening sets on every host.
        "ssh_file_transfer_protocol": "scp",
    }
    if target.user:
        data["ssh_user"] = target.user
    if target.key:
        data["ssh_key"] = target.key
    if target.known_hosts:
        data["ssh_known_hosts_file"] = target.known_hosts
    return data


@dataclass
class Connected:
    remotes: dict[str, PyinfraRemote]
    failures: dict[str, str]

    def close(self) -> None:
        for remote in self.remotes.values():
            remote.close()


def connect(inventory: Inventory, hosts: Sequence[str]) -> Connected:
    """Open one SSH connection per host; a host that cannot be reached is a failure of its own."""
    from pyinfra.api import Config, State
    from pyinfra.api import Inventory as PyinfraInventory
    from pyinfra.api.exceptions import ConnectError

    targets = {host: inventory.ssh_target(host) for host in hosts}
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {
        group: ([m for m in members if m in hosts], {})
        for group, members in inventory.groups().items() if set(members) & set(hosts)}
    pyinfra_inventory = PyinfraInventory(([(host, connector_data(targets[host])) for host in hosts], {}), **groups)
    state = State(pyinfra_inventory, Config(CONNECT_TIMEOUT=15))
    failures: dict[str, str] = {}

    def open_one(host: str) -> None:
        try:
            pyinfra_inventory.get_host(host).connect(show_errors=False, raise_exceptions=True)
        except ConnectError as exc:
            failures[host] = f"unreachable: {exc}"
        except Exception as exc:  # paramiko's host key and auth errors are not ConnectError
            failures[host] = f"unreachable: {type(exc).__name__}: {exc}"

    in_parallel(open_one, hosts)
    remotes = {host: PyinfraRemote(host, pyinfra_inventory.get_host(host), targets[host].become)
               for host in hosts if host not in failures and pyinfra_inventory.get_host(host).connected}
    for host in hosts:
        if host not in remotes and host not in failures:
            failures[host] = "unreachable: no connection"
    del state
    return Connected(remotes, failures)


def in_parallel(work: Callable[[str], None], hosts: Sequence[str]) -> None:
    """``work(host)`` for every host, each in a thread, at most MAX_PARALLEL at once.

    ``work`` handles its own failures; an exception that escapes it is raised here once
    every host has finished (none is abandoned half-way).
    """
    from concurrent.futures import ThreadPoolExecutor

    if not hosts:
        return
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts)), thread_name_prefix="qnprov-push") as pool:
        futures = [pool.submit(work, host) for host in hosts]
    for future in futures:
        future.result()
