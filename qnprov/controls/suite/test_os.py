"""Operating-system controls: sshd, nftables, fail2ban, updates, listening sockets."""

from __future__ import annotations

import configparser
import ipaddress
import shlex
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import Facts, run
from qnprov.controls.target import BASELINE_TCP_PORTS, VerifyTarget

REQUIRED_JAILS = frozenset({"sshd", "postfix", "postfix-sasl", "dovecot", "sieve"})

# dev-sec ssh-baseline's modern algorithm sets.
SSH_CIPHERS = frozenset({"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
                         "aes256-ctr", "aes192-ctr", "aes128-ctr"})
SSH_KEX = frozenset({"sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
                     "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
                     "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp521", "ecdh-sha2-nistp384",
                     "ecdh-sha2-nistp256"})
SSH_MACS = frozenset({"hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com",
                      "hmac-sha2-512", "hmac-sha2-256", "umac-128@openssh.com"})


def allowed_ports(target: VerifyTarget) -> set[int]:
    return set(BASELINE_TCP_PORTS) | set(target.extra_tcp_ports)


@pytest.fixture(scope="module")
def sshd(facts: Facts) -> dict[str, str]:
    return hoststate.parse_sshd_t(facts["sshd -T"])


@pytest.mark.control("QN-OS-01")
def test_sshd_no_password_logins(sshd: dict[str, str]) -> None:
    assert sshd.get("permitrootlogin") in ("no", "prohibit-password", "without-password"), (
        f"PermitRootLogin {sshd.get('permitrootlogin')}"
    )
    assert sshd.get("passwordauthentication") == "no", f"PasswordAuthentication {sshd.get('passwordauthentication')}"
    assert sshd.get("permitemptypasswords") == "no", "PermitEmptyPasswords is not no"
    assert sshd.get("kbdinteractiveauthentication", "no") == "no", "KbdInteractiveAuthentication is not no"


@pytest.mark.control("QN-OS-02")
def test_sshd_modern_crypto(sshd: dict[str, str]) -> None:
    problems = {}
    for key, allowed in (("ciphers", SSH_CIPHERS), ("kexalgorithms", SSH_KEX), ("macs", SSH_MACS)):
        weak = sorted(set(sshd.get(key, "").split(",")) - allowed - {""})
        if weak:
            problems[key] = weak
    assert not problems, f"sshd offers legacy algorithms: {problems}"


@pytest.mark.control("QN-OS-03")
def test_sshd_session_hardening(sshd: dict[str, str]) -> None:
    expected = {"x11forwarding": "no", "allowtcpforwarding": "no", "allowagentforwarding": "no"}
    wrong = {key: sshd.get(key) for key, value in expected.items() if sshd.get(key) != value}
    tries = sshd.get("maxauthtries", "6")
    if not tries.isdigit() or int(tries) > 4:
        wrong["maxauthtries"] = tries
    assert not wrong, f"sshd session settings: {wrong}"


@pytest.fixture(scope="module")
def nft_input(facts: Facts) -> hoststate.NftInput:
    return hoststate.parse_nft_input(facts["nft"])


@pytest.mark.control("QN-OS-04")
def test_nft_input_default_drop(nft_input: hoststate.NftInput) -> None:
    chains = [f"{c['family']} {c['table']} {c['name']} policy {c.get('policy')}" for c in nft_input.chains]
    assert nft_input.default_drop, f"no drop-policy input chain covers IPv4 and IPv6; input chains: {chains}"
    assert not nft_input.unconditional_accepts, (
        f"the drop-policy chain accepts everything in: {nft_input.unconditional_accepts}"
    )


@pytest.mark.control("QN-OS-05")
def test_nft_allowlist(nft_input: hoststate.NftInput, target: VerifyTarget, record_property: Any) -> None:
    record_property("nft_accepted_tcp_ports", sorted(nft_input.accepted_tcp_ports))
    extra = sorted(nft_input.accepted_tcp_ports - allowed_ports(target))
    assert nft_input.accepted_tcp_ports, "the firewall accepts no TCP port (policy drop with no allowlist?)"
    assert not extra, f"firewall accepts TCP ports beyond {sorted(allowed_ports(target))}: {extra}"
    assert not nft_input.source_accepts, f"sources accepted on every port: {nft_input.source_accepts}"


@pytest.mark.control("QN-OS-06")
def test_fail2ban_jails(facts: Facts) -> None:
    running = set(hoststate.parse_fail2ban_status(facts["fail2ban status"]))
    missing = sorted(REQUIRED_JAILS - running)
    assert not missing, f"fail2ban jails not running: {missing} (running: {sorted(running)})"
    backends = hoststate.fail2ban_jail_backends(hoststate.parse_fail2ban_dump(facts["fail2ban dump"]))
    wrong = {jail: backends.get(jail) for jail in REQUIRED_JAILS
             if not str(backends.get(jail, "")).startswith("systemd")}
    assert not wrong, f"jails not on the systemd backend: {wrong}"


@pytest.mark.control("QN-OS-06")
def test_fail2ban_postfix_mode_more(host: Any) -> None:
    if not host.file("/etc/fail2ban/jail.conf").exists:
        raise ProbeError("fail2ban is not installed (/etc/fail2ban/jail.conf missing)")
    text = run(host, "sh -c 'cat /etc/fail2ban/jail.conf /etc/fail2ban/jail.d/*.conf /etc/fail2ban/jail.local "
                     "/etc/fail2ban/jail.d/*.local 2>/dev/null'", ok=(0, 1))
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    mode = parser.get("postfix", "mode", fallback="normal").strip()
    assert mode in ("more", "aggressive"), f"fail2ban [postfix] mode = {mode!r}, expected more"


@pytest.mark.control("QN-OS-07")
def test_unattended_security_upgrades(host: Any, facts: Facts) -> None:
    assert host.package("unattended-upgrades").is_installed, "unattended-upgrades is not installed"
    dump = facts["apt-config"]
    assert 'APT::Periodic::Unattended-Upgrade "1"' in dump, "APT::Periodic::Unattended-Upgrade is not 1"
    origins = [line for line in dump.splitlines() if line.startswith(("Unattended-Upgrade::Origins-Pattern",
                                                                     "Unattended-Upgrade::Allowed-Origins"))]
    assert any("security" in line.lower() for line in origins), f"no security origin in {origins}"


@pytest.mark.control("QN-OS-08")
def test_listening_sockets_allowlist(facts: Facts, tcp_listeners: list[hoststate.Listener],
                                     target: VerifyTarget) -> None:
    exposed = sorted({(lst.port, lst.process) for lst in tcp_listeners
                      if not lst.loopback and lst.port not in allowed_ports(target)})
    assert not exposed, f"TCP services listening beyond loopback outside the allowlist: {exposed}"
    udp = hoststate.parse_ss_listeners(facts["ss udp"])
    udp_exposed = sorted({(lst.port, lst.process) for lst in udp if not lst.loopback})
    assert not udp_exposed, f"UDP services listening beyond loopback: {udp_exposed}"


#: The root zone's key-signing key (KSK-2017), which every current root trust anchor holds.
ROOT_KSK_TAG = "20326"
UNBOUND_CONTROL = "unbound-control -c /etc/unbound/unbound.conf"


def _loopback_only(network: str) -> bool:
    net = ipaddress.ip_network(network, strict=False)
    return net.network_address.is_loopback and net.broadcast_address.is_loopback


@pytest.mark.control("QN-OS-10")
def test_local_resolver_validates_dnssec_on_loopback_only(host: Any, facts: Facts) -> None:
    assert host.service("unbound").is_running, "unbound is not running"
    # ss does not always name unbound's sockets: every DNS listener must be loopback.
    listeners = [lst for lst in hoststate.parse_ss_listeners(facts["ss udp"])
                 + hoststate.parse_ss_listeners(facts["ss tcp"]) if lst.port == 53]
    assert any(lst.address == "127.0.0.1" for lst in listeners), (
        f"nothing answers DNS on 127.0.0.1:53; port 53 sockets: {listeners}")
    exposed = sorted({f"{lst.address}:{lst.port}" for lst in listeners if not lst.loopback})
    assert not exposed, f"DNS listens beyond loopback: {exposed}"
    interfaces = run(host, f"{UNBOUND_CONTROL} get_option interface").split()
    assert interfaces and all(ipaddress.ip_address(a.split("@")[0]).is_loopback for a in interfaces), (
        f"unbound interfaces {interfaces}")
    acl = [line.split() for line in run(host, f"{UNBOUND_CONTROL} get_option access-control").splitlines()]
    open_to = [net for net, action in acl if action.startswith("allow") and not _loopback_only(net)]
    assert not open_to, f"unbound recurses for {open_to}: an open resolver"
    modules = run(host, f"{UNBOUND_CONTROL} get_option module-config").split()
    assert modules[:1] == ["validator"], f"unbound module-config is {modules}: DNSSEC is not validated"
    permissive = run(host, f"{UNBOUND_CONTROL} get_option val-permissive-mode").strip()
    assert permissive == "no", f"val-permissive-mode is {permissive!r}: bogus answers would be served"
    anchors = [run(host, f"{UNBOUND_CONTROL} get_option {option}").strip()
               for option in ("auto-trust-anchor-file", "trust-anchor-file")]
    files = [path.strip('"') for path in anchors if path]
    assert files, "unbound has no root trust anchor file"
    texts = [run(host, f"cat {shlex.quote(path)}") for path in files]
    assert any(ROOT_KSK_TAG in text or "AwEAAaz/tAm8yTn4Mfeh" in text for text in texts), (
        f"no root KSK ({ROOT_KSK_TAG}) in the trust anchor files {files}")


@pytest.mark.control("QN-OS-10")
def test_host_resolves_through_the_local_resolver(host: Any) -> None:
    resolv = run(host, "cat /etc/resolv.conf")
    nameservers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver ")]
    assert nameservers, "/etc/resolv.conf names no nameserver"
    remote = [ns for ns in nameservers if ns not in ("127.0.0.1", "::1")]
    assert not remote, f"/etc/resolv.conf also names {remote}: lookups bypass the validating resolver"
    options = {opt for line in resolv.splitlines() if line.startswith("options ") for opt in line.split()[1:]}
    assert "trust-ad" in options, "resolv.conf lacks options trust-ad: glibc drops the AD bit DANE needs"
