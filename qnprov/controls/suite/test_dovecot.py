"""Dovecot controls, read with ``doveconf`` and from the files it names."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import Facts, file_facts, run
from qnprov.controls.suite.test_postfix import MOZILLA_CURVES, MOZILLA_INTERMEDIATE_TLS12, _expand_ciphers

Doveconf = Callable[[str], str]
ALLOWED_PROTOCOLS = {"imap", "lmtp", "sieve"}
POSTFIX_AUTH_SOCKET = "/var/spool/postfix/private/auth"


@pytest.mark.control("QN-DOV-01")
def test_ssl_required(doveconf: Doveconf) -> None:
    assert doveconf("ssl") == "required", f"ssl={doveconf('ssl')!r}, expected required"


@pytest.mark.control("QN-DOV-02")
def test_no_plaintext_auth(doveconf: Doveconf) -> None:
    assert doveconf("disable_plaintext_auth") == "yes", f"disable_plaintext_auth={doveconf('disable_plaintext_auth')!r}"


@pytest.mark.control("QN-DOV-03")
def test_ssl_min_protocol(doveconf: Doveconf) -> None:
    assert doveconf("ssl_min_protocol") in ("TLSv1.2", "TLSv1.3"), f"ssl_min_protocol={doveconf('ssl_min_protocol')!r}"


@pytest.mark.control("QN-DOV-04")
def test_ssl_ciphers_mozilla(host: Any, doveconf: Doveconf) -> None:
    extra = sorted(_expand_ciphers(host, doveconf("ssl_cipher_list")) - MOZILLA_INTERMEDIATE_TLS12)
    assert not extra, f"ssl_cipher_list enables suites outside Mozilla intermediate: {extra}"
    curves = set(doveconf("ssl_curve_list").split(":")) - {""}
    assert curves and curves <= MOZILLA_CURVES, f"ssl_curve_list={sorted(curves)}, expected ⊆ {sorted(MOZILLA_CURVES)}"
    # Server order, as internet.nl and testssl.sh require (see QN-PFX-05).
    assert doveconf("ssl_prefer_server_ciphers") == "yes", "ssl_prefer_server_ciphers must be yes (server order)"


@pytest.mark.control("QN-DOV-05")
def test_postfix_auth_socket_mode(host: Any) -> None:
    facts = file_facts(host, POSTFIX_AUTH_SOCKET)
    assert facts["type"] == "socket", f"{POSTFIX_AUTH_SOCKET} is a {facts['type']}, not a socket"
    assert (facts["user"], facts["group"], facts["mode"]) == ("postfix", "postfix", 0o660), (
        f"{POSTFIX_AUTH_SOCKET} is {facts['user']}:{facts['group']} {facts['mode']:04o}, expected postfix:postfix 0660"
    )


@pytest.mark.control("QN-DOV-06")
def test_protocols_allowlist(doveconf: Doveconf, tcp_listeners: list[hoststate.Listener]) -> None:
    protocols = set(doveconf("protocols").split())
    assert protocols <= ALLOWED_PROTOCOLS, f"protocols={sorted(protocols)}; only {sorted(ALLOWED_PROTOCOLS)} are in use"
    pop3 = [f"{lst.address}:{lst.port}" for lst in tcp_listeners if lst.port in (110, 995)]
    assert not pop3, f"POP3 ports are listening: {pop3}"


def _ldap_conf_files(facts: Facts, kind: str = "passdb|userdb") -> list[str]:
    """args files of the LDAP passdb/userdb blocks in ``doveconf -n``."""
    text = facts["doveconf -n"]
    blocks = re.findall(rf"^(?:{kind}) \{{\n(.*?)^\}}", text, re.MULTILINE | re.DOTALL)
    paths = sorted({m.group(1) for block in blocks if re.search(r"driver\s*=\s*ldap", block)
                    for m in [re.search(r"args\s*=\s*(/\S+)", block)] if m})
    if not paths:
        raise ProbeError(f"doveconf -n names no LDAP {kind} args file")
    return paths


@pytest.mark.control("QN-DOV-07")
def test_ldap_conf_protected_and_auth_bind(host: Any, facts: Facts) -> None:
    problems = []
    for path in _ldap_conf_files(facts):
        stat = file_facts(host, path)
        if stat["user"] != "root" or stat["mode"] not in (0o600, 0o400):
            problems.append(f"{path} is {stat['user']}:{stat['group']} {stat['mode']:04o}")
    for path in _ldap_conf_files(facts, "passdb"):
        settings = run(host, f"grep -E '^[[:space:]]*auth_bind[[:space:]]*=' {path}", ok=(0, 1))
        if not re.search(r"auth_bind\s*=\s*yes", settings):
            problems.append(f"passdb {path} does not set auth_bind = yes")
    assert not problems, "; ".join(problems)


@pytest.mark.control("QN-DOV-08")
def test_no_trusted_networks(doveconf: Doveconf) -> None:
    trusted = doveconf("login_trusted_networks")
    ok, offenders = hoststate.networks_are_loopback(trusted)
    assert ok, f"login_trusted_networks={trusted!r}: clients from {offenders} skip the plaintext-auth rules"


@pytest.mark.control("QN-DOV-09")
def test_passdb_filter_requires_active_account(host: Any, facts: Facts) -> None:
    filters = []
    for path in _ldap_conf_files(facts, "passdb"):
        filters += run(host, f"grep -E '^[[:space:]]*pass_filter' {path}", ok=(0, 1)).splitlines()
    assert filters, "no pass_filter in Dovecot's LDAP files"
    for line in filters:
        assert "qnAccountStatus=active" in line and "qnEnabledService=imap" in line, (
            f"{line.strip()!r} lets disabled accounts or accounts without imap log in"
        )
