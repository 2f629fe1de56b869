"""How the lab reaches its hosts as production does: SSH as the deploy user.

The lab's key, known_hosts and control sockets live in the lab state; each host gets
sshd, sudo and the deploy account once, through podman (a channel the lab already
trusts), so host key checking stays on and nothing is accepted on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qnprov import runner, testbed
from qnprov.errors import ConfigError, ExternalError

#: The account Ansible logs in as over SSH and becomes root from with sudo, as the
#: production inventory does (inventories/example-production: ansible_user deploy, become).
DEPLOY_USER = "deploy"
#: The lab publishes sshd on this endpoint name (qnprov_lab_publish), on host loopback.
SSH_ENDPOINT = "ssh"


class SshHost(Protocol):
    """What this module needs of a lab host (``qnprov.lab.LabHost``)."""

    @property
    def name(self) -> str: ...
    @property
    def container(self) -> str: ...
    @property
    def publish(self) -> Mapping[str, tuple[int, int]]: ...


@dataclass(frozen=True)
class SshFiles:
    """Where the lab keeps what Ansible's ssh connection needs (the inventory's
    group_vars name the same paths under ``qnprov_state_dir``)."""

    state: Path

    @property
    def dir(self) -> Path:
        return self.state / "ssh"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def control_dir(self) -> Path:
        return self.dir / "cp"


def forget_host(state: Path, name: str) -> None:
    """Drop what the lab state remembers of a host that was replaced: its cached facts
    and any SSH control socket still pointing at the old container."""
    cache = runner.fact_cache_dir(state)
    if cache.is_dir():
        for entry in cache.iterdir():
            if runner.fact_cache_host(entry.name) == name:
                entry.unlink(missing_ok=True)
    control = SshFiles(state).control_dir
    if control.is_dir():
        for sock in control.iterdir():
            sock.unlink(missing_ok=True)


def ensure_ssh_key(files: SshFiles) -> Path:
    """The lab's ed25519 deploy key (0600, in a 0700 directory); created once per lab state."""
    files.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(files.dir, 0o700)
    files.control_dir.mkdir(exist_ok=True)
    os.chmod(files.control_dir, 0o700)
    if not files.key.is_file():
        files.key.with_suffix(".pub").unlink(missing_ok=True)
        testbed.run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qnprov-lab-deploy",
                             "-f", str(files.key)], timeout=60)
    os.chmod(files.key, 0o600)
    return files.key


#: Run in a lab container through podman, once per `lab up` (idempotent; fast when done).
#: What a production host has before qnprov ever deploys to it: sshd, sudo, and a deploy
#: account that logs in with a key only (password field "*": no password, not locked, so
#: sshd's UsePAM account check passes) and becomes root with sudo. The os_hardening role
#: then hardens this sshd like any other (sshd_config validated with sshd -T).
SSH_BOOTSTRAP = r"""set -eu
user="$1"
if ! command -v sshd >/dev/null 2>&1 || ! command -v sudo >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openssh-server sudo >/dev/null
fi
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
usermod -p '*' "$user"
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
cat > "$home/.ssh/authorized_keys.new"
chown "$user:$user" "$home/.ssh/authorized_keys.new"
chmod 0600 "$home/.ssh/authorized_keys.new"
mv "$home/.ssh/authorized_keys.new" "$home/.ssh/authorized_keys"
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL
' "$user" > /etc/sudoers.d/qnprov-deploy.new
chmod 0440 /etc/sudoers.d/qnprov-deploy.new
visudo -cqf /etc/sudoers.d/qnprov-deploy.new
mv /etc/sudoers.d/qnprov-deploy.new /etc/sudoers.d/qnprov-deploy
test -s /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/ssh_host_ed25519_key
systemctl enable --now ssh.service >/dev/null 2>&1
systemctl is-active --quiet ssh.service
cat /etc/ssh/ssh_host_ed25519_key.pub
"""


def ssh_port(host: SshHost) -> int:
    if SSH_ENDPOINT not in host.publish:
        raise ConfigError(f"lab host {host.name}: qnprov_lab_publish has no {SSH_ENDPOINT} port; "
                          "Ansible reaches lab hosts over SSH as it does production")
    return host.publish[SSH_ENDPOINT][0]


def known_hosts_line(host: SshHost, host_key: str) -> str:
    """The known_hosts entry for the host's published sshd (``[127.0.0.1]:PORT``)."""
    fields = host_key.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise ExternalError(f"{host.container}: unexpected sshd host key {host_key[:40]!r}")
    return f"[127.0.0.1]:{ssh_port(host)} {fields[0]} {fields[1]}"


def write_known_host(files: SshFiles, line: str) -> None:
    """Put ``line`` into the lab's known_hosts (0600), replacing the entry for the same address."""
    address = line.split()[0]
    kept = []
    if files.known_hosts.is_file():
        kept = [entry for entry in files.known_hosts.read_text().splitlines()
                if entry.strip() and entry.split()[0] != address]
    fd = os.open(files.known_hosts.with_suffix(".new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join([*kept, line]) + "\n")
    os.replace(files.known_hosts.with_suffix(".new"), files.known_hosts)


def bootstrap_ssh(host: SshHost, files: SshFiles) -> str:
    """Make the lab host reachable over SSH as production hosts are; return its known_hosts line.

    The host key is read through podman, a channel the lab already trusts, so host key
    checking stays on and nothing is accepted on first use.
    """
    ssh_port(host)
    public = ensure_ssh_key(files).with_suffix(".pub").read_text()
    proc = testbed.run_command(["podman", "exec", "-i", host.container, "sh", "-c", SSH_BOOTSTRAP,
                                "qnprov-ssh-bootstrap", DEPLOY_USER], input=public, timeout=600)
    line = known_hosts_line(host, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "")
    write_known_host(files, line)
    return line
