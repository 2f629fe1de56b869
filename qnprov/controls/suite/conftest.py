"""Fixtures for the packaged control suite.

Run by ``qnprov verify`` as::

    pytest <suite> --hosts=podman://qnprov-lab-mail1 --qnprov-target=target.json

Host state is read through testinfra's ``host`` (podman exec or ssh). Network probes
go from this process to ``target.endpoints`` (see qnprov.controls.probes).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.target import VerifyTarget

# testinfra's own ``host`` fixture is module-scoped; the facts every module shares
# (postconf, cn=config, listeners, the probe source) come from one session-scoped host
# so each is read once per run.

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


@pytest.fixture(scope="session")
def session_host(request: pytest.FixtureRequest) -> Any:
    """The host under test, built once per session from testinfra's own options."""
    import testinfra

    option = request.config.option
    spec = (option.hosts or "local://").split(",")[0]
    return testinfra.get_host(spec, connection=option.connection, ssh_config=option.ssh_config,
                              ssh_identity_file=option.ssh_identity_file, sudo=option.sudo,
                              sudo_user=option.sudo_user)


#: Read-only commands whose output several checks share. They run in ONE host command
#: per session (each podman exec / ssh round trip costs far more than the commands).
DOVECOT_SETTINGS = ("ssl", "disable_plaintext_auth", "ssl_min_protocol", "ssl_cipher_list", "ssl_curve_list",
                    "ssl_prefer_server_ciphers", "protocols", "login_trusted_networks")
FACT_COMMANDS: dict[str, str] = {
    "postconf": "postconf",
    "postconf -P": "postconf -P",
    "postconf -M": "postconf -M",
    "doveconf -n": "doveconf -n",
    "doveconf settings": "doveconf " + " ".join(DOVECOT_SETTINGS),
    "slapcat -n0": "slapcat -n0 -o ldif-wrap=no",
    "ss tcp": "ss -Hltnp",
    "ss udp": "ss -Hlunp",
    "nft": "nft -j list ruleset",
    "sshd -T": "sshd -T",
    "fail2ban status": "fail2ban-client status",
    "fail2ban dump": "fail2ban-client -d",
    "apt-config": "apt-config dump",
    "rspamd modules": "rspamadm configdump -m",
    "rspamd dkim_signing": "rspamadm configdump dkim_signing",
    "rspamd actions": "rspamadm configdump actions",
}
_FACT_MARK = "@@qnprov-fact@@"


class Facts:
    """Outputs of FACT_COMMANDS, gathered in one host command."""

    def __init__(self, host: Any) -> None:
        self.host = host
        script = "; ".join(
            f"echo '{_FACT_MARK} {name}'; timeout {COMMAND_TIMEOUT} {command} 2>/dev/null; echo \"{_FACT_MARK} rc $?\""
            for name, command in FACT_COMMANDS.items())
        output = host.run(f"sh -c {shlex.quote(script)}").stdout
        pattern = re.compile(rf"{_FACT_MARK} (?P<name>[^\n]+)\n(?P<body>.*?){_FACT_MARK} rc (?P<rc>\d+)\n?", re.S)
        self.outputs: dict[str, tuple[int, str]] = {
            m["name"]: (int(m["rc"]), m["body"]) for m in pattern.finditer(output)}

    def __getitem__(self, name: str) -> str:
        rc, text = self.outputs.get(name, (1, ""))
        if rc != 0:
            # Run it alone to report what went wrong (stderr was discarded in the batch).
            return run(self.host, FACT_COMMANDS[name])
        return text


def run(host: Any, command: str, *, ok: tuple[int, ...] = (0,)) -> str:
    """Run a read-only command on the host; a failure to run it is an error, not a fail."""
    result = host.run(f"timeout {COMMAND_TIMEOUT} {command}")
    if result.rc not in ok:
        raise ProbeError(f"`{command}` exited {result.rc}: {(result.stderr or result.stdout).strip()[:400]}")
    return str(result.stdout)


@pytest.fixture(scope="session")
def facts(session_host: Any) -> Facts:
    return Facts(session_host)


@pytest.fixture(scope="session")
def postconf(facts: Facts) -> dict[str, str]:
    """Effective main.cf values (defaults included)."""
    return hoststate.parse_postconf(facts["postconf"])


@pytest.fixture(scope="session")
def service_params(facts: Facts) -> dict[str, dict[str, str]]:
    """master.cf ``-o`` overrides, keyed "service/type"."""
    return hoststate.parse_service_params(facts["postconf -P"])


@pytest.fixture(scope="session")
def master_services(facts: Facts) -> list[hoststate.MasterService]:
    return hoststate.parse_master_services(facts["postconf -M"])


def effective(postconf: dict[str, str], service_params: dict[str, dict[str, str]], service: str,
              name: str) -> str:
    """A parameter as one master.cf service sees it: its -o override, else main.cf.

    ``-o name=$other`` references (common: ``$mua_sender_restrictions``) are expanded
    against main.cf, since ``postconf -P`` prints them unexpanded.
    """
    value = service_params.get(service, {}).get(name, postconf.get(name, ""))
    return hoststate.expand_parameters(value, postconf)


@pytest.fixture(scope="session")
def doveconf(session_host: Any, facts: Facts) -> Callable[[str], str]:
    cache: dict[str, str] = {}
    batch = hoststate.parse_postconf(facts["doveconf settings"])  # same "name = value" shape
    cache.update({name: batch[name] for name in DOVECOT_SETTINGS if name in batch})

    def value(name: str) -> str:
        if name not in cache:
            cache[name] = run(session_host, f"doveconf -h {name}").strip()
        return cache[name]

    return value


@pytest.fixture(scope="session")
def cn_config(facts: Facts) -> list[dict[str, list[str]]]:
    """slapd's cn=config, read with slapcat (works whatever the ACLs on cn=config)."""
    return hoststate.parse_ldif(facts["slapcat -n0"])


@pytest.fixture(scope="session")
def tcp_listeners(facts: Facts) -> list[hoststate.Listener]:
    return hoststate.parse_ss_listeners(facts["ss tcp"])


def file_facts(host: Any, path: str) -> dict[str, Any]:
    """Owner, group, mode and type of a file in one host command; an error if it is missing."""
    if not re.fullmatch(r"/[A-Za-z0-9_./+\-]+", path):
        raise ProbeError(f"unexpected characters in path {path!r}")
    result = host.run(f"stat -c '%U %G %a %F' {path}")
    if result.rc != 0:
        raise ProbeError(f"{path} does not exist on the host")
    user, group, mode, kind = result.stdout.strip().split(" ", 3)
    return {"path": path, "user": user, "group": group, "mode": int(mode, 8), "type": kind}


@pytest.fixture(scope="session")
def outside_source(session_host: Any, target: VerifyTarget, postconf: dict[str, str]) -> str:
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
            listing = run(session_host, "ss -Htn state established '( sport = :587 )'")
    except (ProbeError, OSError) as exc:
        # The usual cause in a lab that was verified many times: fail2ban banned the prober.
        bans = session_host.run("fail2ban-client banned")
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
