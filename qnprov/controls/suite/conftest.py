"""Fixtures for the packaged control suite.

Run by ``qnprov verify`` as::

    pytest <suite> --hosts=podman://qnprov-lab-mail1 --qnprov-target=target.json

Host state is read through testinfra's ``host`` (podman exec or ssh). Network probes
go from this process to ``target.endpoints`` (see qnprov.controls.probes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.target import VerifyTarget

# testinfra's ``host`` fixture is module-scoped, so fixtures that read host state are
# module-scoped too (each test module reads postconf etc. once).

#: Longest a single host command may run (seconds); Lynis has its own budget.
COMMAND_TIMEOUT = 60


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--qnprov-target", default=None, help="JSON file describing the host under test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "control(id): the catalogue control(s) this test checks")
    config.addinivalue_line("markers", "scanner: runs an external scanner (testssl.sh, Lynis); slow")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> VerifyTarget:
    path = request.config.getoption("--qnprov-target")
    if not path:
        raise ProbeError("no --qnprov-target given: the suite does not know which host it checks")
    return VerifyTarget.read(Path(path))


def run(host: Any, command: str, *, ok: tuple[int, ...] = (0,)) -> str:
    """Run a read-only command on the host; a failure to run it is an error, not a fail."""
    result = host.run(f"timeout {COMMAND_TIMEOUT} {command}")
    if result.rc not in ok:
        raise ProbeError(f"`{command}` exited {result.rc}: {(result.stderr or result.stdout).strip()[:400]}")
    return str(result.stdout)


@pytest.fixture(scope="module")
def postconf(host: Any) -> dict[str, str]:
    """Effective main.cf values (defaults included)."""
    return hoststate.parse_postconf(run(host, "postconf"))


@pytest.fixture(scope="module")
def service_params(host: Any) -> dict[str, dict[str, str]]:
    """master.cf ``-o`` overrides, keyed "service/type"."""
    return hoststate.parse_service_params(run(host, "postconf -P"))


@pytest.fixture(scope="module")
def master_services(host: Any) -> list[hoststate.MasterService]:
    return hoststate.parse_master_services(run(host, "postconf -M"))


def effective(postconf: dict[str, str], service_params: dict[str, dict[str, str]], service: str,
              name: str) -> str:
    """A parameter as one master.cf service sees it: its -o override, else main.cf.

    ``-o name=$other`` references (common: ``$mua_sender_restrictions``) are expanded
    against main.cf, since ``postconf -P`` prints them unexpanded.
    """
    value = service_params.get(service, {}).get(name, postconf.get(name, ""))
    return hoststate.expand_parameters(value, postconf)


@pytest.fixture(scope="module")
def doveconf(host: Any) -> Callable[[str], str]:
    cache: dict[str, str] = {}

    def value(name: str) -> str:
        if name not in cache:
            cache[name] = run(host, f"doveconf -h {name}").strip()
        return cache[name]

    return value


@pytest.fixture(scope="module")
def cn_config(host: Any) -> list[dict[str, list[str]]]:
    """slapd's cn=config, read with slapcat (works whatever the ACLs on cn=config)."""
    return hoststate.parse_ldif(run(host, "slapcat -n0 -o ldif-wrap=no"))


@pytest.fixture(scope="module")
def tcp_listeners(host: Any) -> list[hoststate.Listener]:
    return hoststate.parse_ss_listeners(run(host, "ss -Hltnp"))


def file_facts(host: Any, path: str) -> dict[str, Any]:
    """Owner, group, mode and type of a file in one host command; an error if it is missing."""
    if not re.fullmatch(r"/[A-Za-z0-9_./+\-]+", path):
        raise ProbeError(f"unexpected characters in path {path!r}")
    result = host.run(f"stat -c '%U %G %a %F' {path}")
    if result.rc != 0:
        raise ProbeError(f"{path} does not exist on the host")
    user, group, mode, kind = result.stdout.strip().split(" ", 3)
    return {"path": path, "user": user, "group": group, "mode": int(mode, 8), "type": kind}


@pytest.fixture(scope="module")
def outside_source(host: Any, target: VerifyTarget, postconf: dict[str, str]) -> str:
    """Prove that our probes reach the host from outside mynetworks and trusted networks.

    Opens one connection to the submission endpoint, then asks the host who is
    connected to its port 587. Probes from an address inside mynetworks (such as
    127.0.0.1 on the host itself) would prove nothing, so that is an error.
    """
    import ipaddress

    from qnprov.controls import probes

    endpoint = target.endpoint("submission")
    try:
        with probes.smtp_session(endpoint.host, endpoint.port):
            listing = run(host, "ss -Htn state established '( sport = :587 )'")
    except (ProbeError, OSError) as exc:
        # The usual cause in a lab that was verified many times: fail2ban banned the prober.
        bans = host.run("fail2ban-client banned")
        hint = f"; fail2ban bans: {bans.stdout.strip()[:300]}" if bans.rc == 0 else ""
        raise ProbeError(f"cannot reach the host from outside: {exc}{hint}") from exc
    peers = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            peers.append(fields[3].rpartition(":")[0].strip("[]"))
    if not peers:
        raise ProbeError("could not see the probe connection on the host (ss shows no peer on :587)")
    trusted = postconf.get("mynetworks", "")
    for peer in peers:
        address = ipaddress.ip_address(peer.removeprefix("::ffff:"))
        for item in hoststate.split_list(trusted):
            network = ipaddress.ip_network(item.strip("[]").replace("]/", "/"), strict=False)
            if address.version == network.version and address in network:
                raise ProbeError(f"probes arrive from {address}, inside mynetworks {trusted}: they would prove nothing")
    return peers[0]
