"""A push over an inventory: which hosts, one transaction each, with per-host results.

The MTA hosts (group ``mta``, where ``playbooks/site.yml`` applies ``qnprov_milter``),
narrowed by ``--limit`` (an Ansible host pattern, read by the same inventory reader).
Everything that can be refused is refused before the first host is touched: the
inventory's variables and templates are rendered for every host first. Each host is then
one transaction (:func:`qnprov.push.apply.push_host`) in a thread of its own, at most
:data:`qnprov.push.remote.MAX_PARALLEL` at once; a host that cannot be reached is a failure of its own and
the others go on. Threads, not greenlets: pyinfra's SSH connector blocks in paramiko, and
greenlets only take turns on that I/O once gevent's ``monkey.patch_all()`` has patched the
socket module, as the ``pyinfra`` command does. qnprov does not patch (in this process it
would also patch Ansible's threads and subprocesses), so greenlets ran the hosts one after
another. Each thread has its own gevent hub for pyinfra's output readers, and paramiko
releases the GIL while it waits on the network, so N hosts take about as long as the
slowest one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qnprov.errors import ConfigError
from qnprov.inventory import Inventory
from qnprov.push.apply import HostResult, push_host
from qnprov.push.files import PolicyFiles, policy_files
from qnprov.push.remote import Remote, connect, in_parallel

#: The inventory group whose hosts run the milter (playbooks/site.yml).
MTA_GROUP = "mta"

#: Called as each host finishes (the CLI's progress display).
OnHost = Callable[[HostResult], None]
#: Turns a host's rendered files (and the host itself, to read its state) into what to push.
Plan = Callable[[Remote, PolicyFiles], PolicyFiles]


@dataclass
class PushResult:
    command: str
    check: bool
    hosts: dict[str, HostResult] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.status == "failed"]

    @property
    def changed(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.status == "changed"]

    def as_json(self) -> dict[str, Any]:
        return {"command": self.command, "check": self.check, "seconds": round(self.seconds, 3),
                "ok": not self.failed,
                "summary": {status: sorted(h for h, r in self.hosts.items() if r.status == status)
                            for status in ("changed", "unchanged", "failed")},
                "hosts": {h: r.as_json() for h, r in sorted(self.hosts.items())}}


def target_hosts(inventory: Inventory, limit: str | None) -> list[str]:
    """The MTAs, narrowed by ``--limit``; ConfigError when that leaves none."""
    if MTA_GROUP not in inventory.groups():
        raise ConfigError(f"inventory {inventory.source} has no {MTA_GROUP!r} group: nothing runs the milter")
    hosts = inventory.hosts_matching(MTA_GROUP)
    if limit:
        chosen = set(inventory.hosts_matching(limit))
        hosts = [h for h in hosts if h in chosen]
    if not hosts:
        raise ConfigError(f"no MTA host of {inventory.source} matches --limit {limit}")
    return hosts


def render_all(inventory: Inventory, hosts: Sequence[str]) -> dict[str, PolicyFiles]:
    """Every host's files, rendered before any host is touched (a template error stops here)."""
    rendered = {host: policy_files(inventory, host) for host in hosts}
    return {host: files for host, files in rendered.items() if files.enabled}


def push(inventory: Inventory, command: str, *, limit: str | None = None, check: bool = False,
         diff: bool = False, plan: Plan | None = None, on_host: OnHost | None = None) -> PushResult:
    """Push to every selected MTA; ``plan`` adapts each host's files (block lists)."""
    started = time.monotonic()
    wanted = render_all(inventory, target_hosts(inventory, limit))

    def one(remote: Remote) -> HostResult:
        files = plan(remote, wanted[remote.name]) if plan else wanted[remote.name]
        return push_host(remote, files, check=check, diff=diff)

    result = each_host(inventory, command, sorted(wanted), one, check=check, on_host=on_host)
    result.seconds = time.monotonic() - started
    return result


def each_host(inventory: Inventory, command: str, hosts: Sequence[str], one: Callable[[Remote], HostResult], *,
              check: bool, on_host: OnHost | None = None,
              failed: Callable[[str, str], HostResult] = lambda host, why: HostResult(host, "failed",
                                                                                    message=why)) -> PushResult:
    """Connect to ``hosts`` and run ``one`` on each (all at once, a thread each); a host that cannot be
    reached, or whose transaction raises, is a failure of its own and the others go on."""
    started = time.monotonic()
    result = PushResult(command=command, check=check)
    connected = connect(inventory, hosts)
    for host, why in connected.failures.items():
        result.hosts[host] = failed(host, why)
        if on_host:
            on_host(result.hosts[host])

    def run_one(host: str) -> None:
        began = time.monotonic() - started
        try:
            outcome = one(connected.remotes[host])
        except Exception as exc:  # one host's surprise must not stop the others
            outcome = failed(host, f"{type(exc).__name__}: {exc}")
        outcome.began = began
        result.hosts[host] = outcome
        if on_host:
            on_host(outcome)

    try:
        in_parallel(run_one, sorted(connected.remotes))
    finally:
        connected.close()
    return result

