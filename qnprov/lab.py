"""The lab: the production roles deployed on local systemd containers.

The lab is an inventory like any other (``inventories/lab``); what is special
is only that qnprov creates its hosts (podman containers built from the local
base image) and publishes their endpoints on host loopback ports.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import string
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qnprov import inventory as inventory_mod
from qnprov import paths, testbed
from qnprov.errors import ConfigError
from qnprov.labssh import (  # re-exported: the lab's SSH side lives in labssh
    SshFiles,
    bootstrap_ssh,
    ensure_ssh_key,
    forget_host,
    ssh_port,
)

LAB_INVENTORY = paths.INVENTORIES_DIR / "lab"
#: Names another lab inventory as the default of every lab command and of the
#: integration suites (several labs side by side on one machine).
LAB_INVENTORY_ENV = "QNPROV_LAB_INVENTORY"
SERVICES = ("slapd", "postfix", "dovecot", "rspamd", "redis-server", "qnprov-milter", "nginx", "nftables", "fail2ban")
ADMIN_SECRET = "ldap_admin"  # noqa: S105 - the name of a secret file, not a secret


@dataclass(frozen=True)
class LabNetwork:
    """A podman network the lab creates for its hosts (``qnprov_lab_network``).

    Podman's CNI backend on these machines has no DNS: hosts get static addresses
    (``qnprov_lab_ip``) and each container is told its peers' names (``--add-host``).
    """

    name: str
    subnet: str


@dataclass(frozen=True)
class LabHost:
    name: str
    container: str
    hostname: str
    publish: dict[str, tuple[int, int]]
    #: The lab network and this host's static address on it (None: podman's default network).
    network: str | None = None
    ip: str | None = None
    #: (hostname, address) of every other host of the lab on the same network.
    peers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DemoAccount:
    employee_id: str
    address: str


@dataclass(frozen=True)
class LabConfig:
    inventory: Path
    hosts: tuple[LabHost, ...]
    domain: str
    base_dn: str
    accounts: tuple[DemoAccount, ...]
    state: Path = field(default_factory=paths.state_dir)
    network: LabNetwork | None = None

    @property
    def secrets_dir(self) -> Path:
        return self.state / "secrets"

    @property
    def ca_cert(self) -> Path:
        return self.state / "ca" / "ca.crt"

    @property
    def ssh(self) -> SshFiles:
        return SshFiles(self.state)

    def endpoints(self, host: LabHost | None = None) -> dict[str, str]:
        """Published endpoints (name: ``127.0.0.1:PORT``) of ``host``; without one, of the
        whole lab, the first host publishing a name giving it."""
        found: dict[str, str] = {}
        for each in (host,) if host else self.hosts:
            for name, (port, _) in each.publish.items():
                found.setdefault(name, f"127.0.0.1:{port}")
        return found

    def secret(self, name: str) -> str:
        path = self.secrets_dir / name
        if not path.is_file():
            raise ConfigError(f"lab secret {name} missing in {self.secrets_dir}; run `qnprov lab up`")
        return path.read_text().split()[0]


def default_inventory() -> Path:
    """``$QNPROV_LAB_INVENTORY`` (a name or a path), else ``inventories/lab``."""
    chosen = os.environ.get(LAB_INVENTORY_ENV)
    return paths.resolve_inventory(chosen) if chosen else LAB_INVENTORY


def load_lab_config(inventory: Path | None = None) -> LabConfig:
    """Read the lab's hosts, ports and demo accounts from its inventory."""
    inventory = inventory or default_inventory()
    parsed = inventory_mod.load(inventory)
    group_vars = parsed.literal_group_vars("all")
    network = _lab_network(inventory, group_vars.get("qnprov_lab_network"))
    hosts = []
    for name in parsed.lab_hosts:
        hv = parsed.literal_vars(name)
        publish = {k: (int(v[0]), int(v[1])) for k, v in (hv.get("qnprov_lab_publish") or {}).items()}
        ip = hv.get("qnprov_lab_ip")
        if (ip is None) != (network is None):
            raise ConfigError(f"{inventory}: host {name}: qnprov_lab_ip and the all group's "
                              "qnprov_lab_network go together (a static address on the lab network)")
        if ip is not None and network is not None:
            _require_in_subnet(inventory, name, str(ip), network)
        hosts.append(LabHost(name, hv["qnprov_lab_container"], hv.get("qnprov_lab_hostname", name), publish,
                             network.name if network else None, str(ip) if ip is not None else None))
    if not hosts:
        raise ConfigError(f"{inventory}: no host has qnprov_lab_container; not a lab inventory")
    _require_distinct(inventory, hosts)
    hosts = [LabHost(h.name, h.container, h.hostname, h.publish, h.network, h.ip,
                     tuple((p.hostname, p.ip) for p in hosts if p is not h and p.ip is not None))
             for h in hosts]
    missing = [name for name in ("qnprov_domain", "qnprov_ldap_base_dn") if name not in group_vars]
    if missing:
        raise ConfigError(f"{inventory}: the all group does not set {', '.join(missing)}")
    # Each account's password is a lookup (templated): read the two literal fields only.
    accounts = tuple(DemoAccount(str(a["employee_id"]), str(a["mail"]))
                     for a in parsed.group_vars("all").get("openldap_accounts", []) or [])
    return LabConfig(inventory, tuple(hosts), str(group_vars["qnprov_domain"]),
                     str(group_vars["qnprov_ldap_base_dn"]), accounts, network=network)


def _lab_network(inventory: Path, value: object) -> LabNetwork | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value.get("name") or not value.get("subnet"):
        raise ConfigError(f"{inventory}: qnprov_lab_network must be {{name: NETWORK, subnet: CIDR}}")
    try:
        subnet = ipaddress.ip_network(str(value["subnet"]))
    except ValueError as exc:
        raise ConfigError(f"{inventory}: qnprov_lab_network subnet {value['subnet']!r}: {exc}") from exc
    return LabNetwork(str(value["name"]), str(subnet))


def _require_in_subnet(inventory: Path, host: str, ip: str, network: LabNetwork) -> None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise ConfigError(f"{inventory}: host {host}: qnprov_lab_ip {ip!r} is not an address") from exc
    subnet = ipaddress.ip_network(network.subnet)
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address) \
            or address == next(subnet.hosts()):
        raise ConfigError(f"{inventory}: host {host}: qnprov_lab_ip {ip} is not a host address of "
                          f"{network.name} ({network.subnet}; the first address is the gateway)")


def _require_distinct(inventory: Path, hosts: list[LabHost]) -> None:
    """Two hosts of one lab may not share a container, hostname, address or host port."""
    seen: dict[str, str] = {}
    for host in hosts:
        keys = [f"container {host.container}", f"hostname {host.hostname}"]
        keys += [f"address {host.ip}"] if host.ip else []
        keys += [f"host port {port}" for port, _ in host.publish.values()]
        for key in keys:
            if key in seen and seen[key] != host.name:
                raise ConfigError(f"{inventory}: hosts {seen[key]} and {host.name} both use {key}")
            seen.setdefault(key, host.name)


def _random_secret(length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def ensure_secrets(config: LabConfig) -> list[str]:
    """Create missing lab secrets (0700 dir, 0600 files); return the names created.

    The inventory reads them with Ansible's password lookup, which would also
    create them; doing it here first keeps demo passwords known to the CLI.
    """
    config.secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.state, 0o700)
    os.chmod(config.secrets_dir, 0o700)
    wanted = [ADMIN_SECRET, "ldap_postfix", "ldap_dovecot", "ldap_qnprov", "redis"]
    wanted += [f"account_{a.employee_id}" for a in config.accounts]
    created = []
    for name in wanted:
        path = config.secrets_dir / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(_random_secret() + "\n")
        created.append(name)
    if not config.ssh.key.is_file():
        ensure_ssh_key(config.ssh)
        created.append("ssh/id_ed25519")
    return created


def podman(*args: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return testbed.run_command(["podman", *args], check=check, timeout=timeout, input=input)


def container_state(name: str) -> str | None:
    """The container's state, or None when there is none.

    Podman's record can outlive the container's processes: when the machine's
    processes are killed without podman being told (a sandbox that ends, a
    host that loses power), ``podman inspect`` still says "running" while runc
    refuses to exec in it. A "running" record is therefore confirmed with a
    real exec, and reported as "stale" when that fails.
    """
    proc = podman("inspect", "--format", "{{.State.Status}}", name, check=False)
    if proc.returncode != 0:
        return None
    state = proc.stdout.strip()
    if state == "running" and podman("exec", name, "true", check=False, timeout=30).returncode != 0:
        return "stale"
    return state


def container_run_args(host: LabHost) -> list[str]:
    """``podman run`` for a lab host.

    ``--dns=none``: podman would otherwise own /etc/resolv.conf and rewrite it with the
    machine's nameservers on every start, undoing the resolver role (a restarted host
    would bypass its validating resolver). With it, the file is the image's own (the
    build machine's nameservers, which the first converge needs for apt) and the role's
    version survives restarts, as on a real host.
    """
    publish = [f"127.0.0.1:{hp}:{cp}" for hp, cp in host.publish.values()]
    extra = ["--dns=none"]
    if host.ip:
        extra += ["--ip", host.ip]
    extra += [f"--add-host={name}:{ip}" for name, ip in host.peers]
    return testbed.systemd_run_args(host.container, hostname=host.hostname, publish=publish,
                                    network=host.network, extra=extra)


def network_exists(name: str) -> bool:
    return podman("network", "exists", name, check=False, timeout=30).returncode == 0


def network_subnets(name: str) -> list[str]:
    """The subnets of an existing podman network (CNI or netavark inspect formats)."""
    proc = podman("network", "inspect", name, timeout=30)
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.lower() == "subnet" and isinstance(item, str):
                    found.append(str(ipaddress.ip_network(item, strict=False)))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(proc.stdout or "[]"))
    return sorted(set(found))


def ensure_network(network: LabNetwork) -> bool:
    """Create the lab network unless it exists; True if created. An existing network of that
    name on another subnet is refused (the inventory's addresses would not be on it)."""
    if network_exists(network.name):
        subnets = network_subnets(network.name)
        if network.subnet not in subnets:
            raise ConfigError(f"podman network {network.name} exists on {', '.join(subnets) or 'no subnet'}, "
                              f"not {network.subnet}; remove it (qnprov lab down --purge) or change the inventory")
        return False
    podman("network", "create", "--subnet", network.subnet, network.name, timeout=60)
    return True


def remove_network(network: LabNetwork) -> bool:
    """Remove the lab network if it exists (its containers must be gone); True if removed."""
    if not network_exists(network.name):
        return False
    podman("network", "rm", network.name, timeout=60)
    return True


def container_address(host: LabHost) -> str | None:
    """The container's address on the host's lab network (None: not attached, or no container)."""
    if not host.network:
        return None
    proc = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", host.container,
                  check=False, timeout=30)
    if proc.returncode != 0:
        return None
    networks = json.loads(proc.stdout or "null") or {}
    entry = networks.get(host.network) or {}
    return str(entry.get("IPAddress") or "") or None


def ensure_container(host: LabHost, state: Path | None = None) -> bool:
    """Start the host's container; reuse it only when it really runs. True if created.

    Either way the host is then reachable as production hosts are: over SSH as
    ``DEPLOY_USER`` with the lab's key (see ``bootstrap_ssh``). A new container has
    new host keys and new facts, so the lab's cached facts for it are dropped.
    """
    state = state or paths.state_dir()
    current = container_state(host.container)
    # A running container is kept only if it publishes sshd where the inventory says and sits
    # at the inventory's address: both are fixed at creation, so an older one is replaced.
    created = not (current == "running" and publishes_ssh(host)
                   and (host.ip is None or container_address(host) == host.ip))
    if created:
        if current is not None:
            testbed.remove_container(host.container)
        testbed.run_command(container_run_args(host), timeout=120)
        testbed.wait_for_systemd(host.container)
        forget_host(state, host.name)
    bootstrap_ssh(host, SshFiles(state))
    return created


def publishes_ssh(host: LabHost) -> bool:
    """Whether the host's container publishes sshd on the inventory's loopback port."""
    proc = podman("port", host.container, "22/tcp", check=False, timeout=30)
    return proc.returncode == 0 and f"127.0.0.1:{ssh_port(host)}" in proc.stdout.split()


def with_port_base(config: LabConfig, *, containers: dict[str, str], port_base: int,
                   state: Path) -> LabConfig:
    """The same hosts and accounts on other containers, ports and state (molecule)."""
    hosts = tuple(LabHost(h.name, containers.get(h.name, h.container), h.hostname,
                          {k: (port_base + cp, cp) for k, (_, cp) in h.publish.items()},
                          h.network, h.ip, h.peers) for h in config.hosts)
    return LabConfig(config.inventory, hosts, config.domain, config.base_dn, config.accounts, state,
                     config.network)


def test_environment(config: LabConfig) -> dict[str, str]:
    """Environment the integration suites read to find a deployed host.

    Secrets travel only through the environment of the test process.
    """
    accounts = [{"address": a.address, "password": config.secret(f"account_{a.employee_id}")}
                for a in config.accounts]
    return {
        "QNPROV_TEST_HOST": config.hosts[0].container,
        "QNPROV_TEST_ENDPOINTS": json.dumps(config.endpoints()),
        "QNPROV_TEST_ACCOUNTS": json.dumps(accounts),
        "QNPROV_TEST_CA": str(config.ca_cert),
        "QNPROV_TEST_DOMAIN": config.domain,
        "QNPROV_TEST_BASE_DN": config.base_dn,
        "QNPROV_STATE_DIR": str(config.state),
    }


def down(config: LabConfig, *, purge: bool = False) -> list[str]:
    """Remove every host's container; with ``purge`` also the lab network and the state.
    Returns what was removed (container names, then ``network NAME``)."""
    removed = []
    for host in config.hosts:
        if container_state(host.container) is not None:
            testbed.remove_container(host.container)
            removed.append(host.container)
    if purge and config.network and remove_network(config.network):
        removed.append(f"network {config.network.name}")
    if purge and config.state.exists():
        shutil.rmtree(config.state)
    return removed


Step = Callable[[str], None]
