"""OpenLDAP controls, read from cn=config (``slapcat -n0``) and the data DIT."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import run
from qnprov.directory.passwords import (
    ARGON2_MEMORY_KIB,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    SLAPD_ARGON2_MODULE,
    stored_password_problem,
)

Config = list[dict[str, list[str]]]
# What slapd may hash the password modify operation with: {ARGON2} from qnprov's own
# module (argon2id). Debian 12's argon2 module, which writes argon2i with a NUL and a
# stray byte after every hash, must not be loaded at all.
ALLOWED_SLAPD_HASHES = ("{ARGON2}",)
DEBIAN_ARGON2_MODULES = ("argon2", "argon2.so", "argon2.la")
READ_LEVELS = {"read", "search", "compare", "manage", "write"}
SERVICE_READERS = ("cn=postfix,ou=services", "cn=dovecot,ou=services")


def _values(entries: list[dict[str, list[str]]], name: str) -> list[str]:
    return [hoststate.strip_ordering(v) for e in entries for v in e.get(name.lower(), [])]


def _acl_clauses(rule: str) -> tuple[str, list[tuple[str, str]]]:
    """``to X by W1 L1 by W2 L2`` -> ("X", [(W1, L1), ...])."""
    parts = re.split(r"\s+by\s+", " ".join(hoststate.strip_ordering(rule).split()))
    what = parts[0].removeprefix("to ").strip()
    clauses = []
    for part in parts[1:]:
        tokens = part.split()
        clauses.append((tokens[0], tokens[1] if len(tokens) > 1 else ""))
    return what, clauses


def _grants_read(level: str) -> bool:
    if level.startswith(("=", "+")):
        return any(flag in level[1:] for flag in "rscm")
    return level in {"read", "search", "compare", "manage", "write"}


def _grants_write(level: str) -> bool:
    if level.startswith(("=", "+")):
        return any(flag in level[1:] for flag in "wazm")
    return level in {"write", "add", "delete", "manage"}


@pytest.mark.control("QN-LDAP-01")
def test_listeners_loopback_only(host: Any, tcp_listeners: list[hoststate.Listener]) -> None:
    # ss cannot always name the process inside a container, so slapd is known by its ports.
    slapd = [lst for lst in tcp_listeners if lst.process == "slapd" or lst.port in (389, 636)]
    exposed = [f"{lst.address}:{lst.port}" for lst in slapd if not lst.loopback and lst.port != 636]
    assert not exposed, f"slapd serves plain LDAP beyond loopback: {exposed} (only ldaps:// may be exposed)"
    assert host.file("/run/slapd/ldapi").is_socket, "no ldapi socket at /run/slapd/ldapi (is slapd running?)"


@pytest.mark.control("QN-LDAP-02")
def test_bind_anon_disallowed(cn_config: Config) -> None:
    disallows = hoststate.global_config(cn_config).get("olcdisallows", [])
    assert "bind_anon" in disallows, f"olcDisallows={disallows}, expected bind_anon"


@pytest.mark.control("QN-LDAP-03")
def test_requires_authc(cn_config: Config) -> None:
    global_requires = " ".join(hoststate.global_config(cn_config).get("olcrequires", []))
    databases = hoststate.data_databases(cn_config)
    assert databases, "no mdb database in cn=config"
    lacking = [db["dn"][0] for db in databases
               if "authc" not in global_requires and "authc" not in " ".join(db.get("olcrequires", []))]
    assert not lacking, f"olcRequires authc is set neither globally nor on {lacking}"


def _ssf(values: list[str]) -> int:
    numbers = [int(m.group(1)) for v in values for m in re.finditer(r"(?<![a-z_])ssf=(\d+)", v)]
    return max(numbers, default=0)


@pytest.mark.control("QN-LDAP-04")
def test_security_ssf(cn_config: Config) -> None:
    global_ssf = _ssf(hoststate.global_config(cn_config).get("olcsecurity", []))
    weak = [db["dn"][0] for db in hoststate.data_databases(cn_config)
            if max(global_ssf, _ssf(db.get("olcsecurity", []))) < 128]
    assert global_ssf >= 128 or not weak, f"olcSecurity ssf < 128 for {weak}"
    assert hoststate.data_databases(cn_config), "no mdb database in cn=config"


@pytest.mark.control("QN-LDAP-05")
def test_tls_protocol_min(cn_config: Config) -> None:
    config = hoststate.global_config(cn_config)
    minimum = (config.get("olctlsprotocolmin") or ["0"])[0]
    assert tuple(int(p) for p in minimum.split(".")) >= (3, 3), f"olcTLSProtocolMin={minimum!r}, expected 3.3 (TLS 1.2)"
    suite = " ".join(config.get("olctlsciphersuite", []))
    legacy = re.findall(r"\+VERS-(?:SSL3\.0|TLS1\.0|TLS1\.1)", suite)
    assert not legacy, f"olcTLSCipherSuite re-enables {legacy}"


@pytest.mark.control("QN-LDAP-06")
def test_userpassword_acl(cn_config: Config) -> None:
    for db in hoststate.data_databases(cn_config):
        rules = [_acl_clauses(rule) for rule in db.get("olcaccess", [])]
        password_rules = [(what, clauses) for what, clauses in rules if "userpassword" in what.lower()]
        assert password_rules, f"{db['dn'][0]}: no ACL protects userPassword"
        _what, clauses = password_rules[0]
        first_match = next(i for i, (w, _) in enumerate(rules) if "userpassword" in w.lower() or "attrs=" not in w)
        assert "userpassword" in rules[first_match][0].lower(), "a broader ACL precedes the userPassword rule"
        readers = [f"{who} {level}" for who, level in clauses if _grants_read(level)]
        assert not readers, f"userPassword is readable by: {readers}"
        assert ("anonymous", "auth") in clauses, "userPassword rule lacks 'by anonymous auth'"
        assert any(who == "self" and _grants_write(level) for who, level in clauses), "self cannot change its password"
        assert clauses[-1] == ("*", "none"), f"userPassword rule does not end with 'by * none': {clauses[-1]}"


@pytest.mark.control("QN-LDAP-07")
def test_service_dns_read_only(cn_config: Config) -> None:
    writes = []
    for db in hoststate.data_databases(cn_config):
        for rule in db.get("olcaccess", []):
            _, clauses = _acl_clauses(rule)
            for who, level in clauses:
                if any(reader in who.lower() for reader in SERVICE_READERS) and _grants_write(level):
                    writes.append(f"{who} {level}")
        root = " ".join(db.get("olcrootdn", [])).lower()
        assert not any(reader in root for reader in SERVICE_READERS), "a service DN is the database's rootDN"
    assert not writes, f"service DNs with write access: {writes}"


def _module_name(value: str) -> tuple[str, list[str]]:
    words = hoststate.strip_ordering(value).split()
    return (words[0].rsplit("/", 1)[-1], words[1:]) if words else ("", [])


@pytest.mark.control("QN-LDAP-08")
def test_password_hash_scheme(cn_config: Config) -> None:
    # olcPasswordHash lives on the frontend database entry (or, older, on cn=config).
    schemes = [scheme for entry in cn_config for scheme in entry.get("olcpasswordhash", [])]
    assert schemes, "olcPasswordHash is not set (slapd would default to {SSHA} silently; make it explicit)"
    bad = [s for s in schemes if s.upper() not in ALLOWED_SLAPD_HASHES]
    assert not bad, f"olcPasswordHash allows {bad} (only {ALLOWED_SLAPD_HASHES})"
    # {ARGON2} is only as good as the module that provides it.
    modules = [_module_name(v) for v in _values(cn_config, "olcmoduleload")]
    debian = [name for name, _ in modules if name in DEBIAN_ARGON2_MODULES]
    assert not debian, f"Debian's argon2 module is loaded ({debian}): it writes argon2i with junk after the hash"
    ours = [args for name, args in modules if name == SLAPD_ARGON2_MODULE]
    assert len(ours) == 1, f"{SLAPD_ARGON2_MODULE} is loaded {len(ours)} times (once, with m= t= p=)"
    params = dict(arg.split("=", 1) for arg in ours[0] if "=" in arg)
    floor = {"m": ARGON2_MEMORY_KIB, "t": ARGON2_TIME_COST}
    weak = [f"{key}={params.get(key)}" for key, least in floor.items()
            if not params.get(key, "").isdigit() or int(params[key]) < least]
    if params.get("p") != str(ARGON2_PARALLELISM):
        weak.append(f"p={params.get('p')}")
    need = f"m>={ARGON2_MEMORY_KIB}, t>={ARGON2_TIME_COST}, p=1"
    assert not weak, f"{SLAPD_ARGON2_MODULE} parameters {weak} (need {need})"


def _only_argon2id(value: str | bytes) -> str | None:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return None if text.upper().startswith("{ARGON2}") else "not {ARGON2} argon2id (olcRootPW and services)"


@pytest.mark.control("QN-LDAP-08")
def test_passwords_hashed(host: Any, cn_config: Config, record_property: Any) -> None:
    """Every userPassword and olcRootPW is exactly one acceptable hash, nothing after it.

    Which entries may carry which scheme:
    * olcRootPW and ``ou=services`` accounts: {ARGON2} argon2id only (the role's own hashes,
      and password modify through qnprov's module);
    * people: {ARGON2} argon2id (m >= 19 MiB, t >= 2, p = 1: qnprov ``--password-scheme argon2``
      and every password modify); {SSHA} (only ``qnprov accounts apply``'s default for
      120-bit random initial passwords, which must be changed); {CRYPT} yescrypt >= 19 MiB
      (what the previous release's password modify wrote; the next change makes it argon2id).
    """
    suffixes = _values(hoststate.data_databases(cn_config), "olcsuffix")
    if not suffixes:
        raise ProbeError("no data suffix in cn=config")
    offenders: list[str] = []
    hashed = 0
    for database in hoststate.data_databases(cn_config):
        for value in database.get("olcrootpw", []):
            problem = stored_password_problem(value) or _only_argon2id(value)
            if problem:
                offenders.append(f"olcRootPW of {database.get('dn', ['?'])[0]}: {problem}")
    for suffix in suffixes:
        if not re.fullmatch(r"[A-Za-z0-9=,.\-]+", suffix):
            raise ProbeError(f"unexpected suffix {suffix!r}")
        # slapcat reads the database directly, so the ACL that hides userPassword from
        # everyone doesn't hide it from this check; values never leave this function
        # (the reasons name the fault, never the value).
        for entry in hoststate.parse_ldif(run(host, f"slapcat -b '{suffix}' -o ldif-wrap=no")):
            service = ",ou=services," in entry.get("dn", [""])[0].lower().replace(", ", ",")
            for value in entry.get("userpassword", []):
                problem = stored_password_problem(value) or (_only_argon2id(value) if service else None)
                if problem is None:
                    hashed += 1
                else:
                    offenders.append(f"{entry.get('dn', ['?'])[0]}: {problem}")
    record_property("hashed_passwords", hashed)
    assert not offenders, f"passwords stored badly: {sorted(set(offenders))}"
