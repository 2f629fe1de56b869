"""TLS material on the host: key files, key strength, certificate lifetime."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import file_facts, run

#: The check fails when the certificate expires within this many days.
MIN_REMAINING_DAYS = 30


def _safe_path(path: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9_./+\-]+", path):
        raise ProbeError(f"unexpected characters in path {path!r}")
    return path


def service_tls_files(postconf: dict[str, str], doveconf: Callable[[str], str]) -> list[str]:
    files = hoststate.split_list(postconf.get("smtpd_tls_chain_files", ""))
    files += [postconf.get(name, "") for name in ("smtpd_tls_key_file", "smtpd_tls_cert_file")]
    files += [doveconf(name).lstrip("<") for name in ("ssl_key", "ssl_cert")]
    return sorted({_safe_path(f) for f in files if f and f != "$smtpd_tls_cert_file"})


def host_certificate(host: Any, postconf: dict[str, str]) -> str:
    """The first of Postfix's TLS files that holds a certificate (chain files list the key first)."""
    chain = hoststate.split_list(postconf.get("smtpd_tls_chain_files", ""))
    for path in [*chain, postconf.get("smtpd_tls_cert_file", "")]:
        if path and run(host, f"grep -c 'BEGIN CERTIFICATE' {_safe_path(path)}", ok=(0, 1)).strip() not in ("", "0"):
            return path
    raise ProbeError("Postfix names no server certificate")


def _holds_private_key(host: Any, path: str) -> bool:
    return run(host, f"grep -c 'PRIVATE KEY-----' {path}", ok=(0, 1)).strip() not in ("", "0")


@pytest.mark.control("QN-TLS-01")
def test_service_keys_root_only(host: Any, postconf: dict[str, str], doveconf: Callable[[str], str]) -> None:
    key_files = [path for path in service_tls_files(postconf, doveconf) if _holds_private_key(host, path)]
    assert key_files, "no private key found among Postfix's and Dovecot's TLS files"
    bad = []
    for path in key_files:
        facts = file_facts(host, path)
        if facts["user"] != "root" or facts["mode"] not in (0o400, 0o600):
            bad.append(f"{path} {facts['user']}:{facts['group']} {facts['mode']:04o}")
    assert not bad, f"private keys must be root-owned 0400/0600: {bad}"


@pytest.mark.control("QN-TLS-02")
def test_slapd_key_protected(host: Any, cn_config: list[dict[str, list[str]]]) -> None:
    key = (hoststate.global_config(cn_config).get("olctlscertificatekeyfile") or [""])[0]
    assert key, "slapd has no TLS key configured (olcTLSCertificateKeyFile)"
    facts = file_facts(host, _safe_path(key))
    world = facts["mode"] & 0o007
    group_ok = facts["mode"] & 0o070 in (0, 0o040) and (facts["mode"] & 0o040 == 0 or facts["group"] == "openldap")
    assert facts["user"] in ("root", "openldap") and not world and group_ok, (
        f"{key} is {facts['user']}:{facts['group']} {facts['mode']:04o}; want 0400/0600, or 0640 with group openldap"
    )


@pytest.mark.control("QN-TLS-03")
def test_host_key_strength(host: Any, postconf: dict[str, str], record_property: Any) -> None:
    cert = host_certificate(host, postconf)
    algorithm, bits = hoststate.parse_openssl_key_bits(run(host, f"openssl x509 -in {cert} -noout -text"))
    record_property("host_key", f"{algorithm} {bits}")
    strong = (algorithm.startswith("EC") and bits >= 256) or (algorithm == "RSA" and bits >= 3072)
    assert strong, f"{cert}: {algorithm} {bits}-bit key; want ECDSA P-256+ or RSA ≥ 3072"


@pytest.mark.control("QN-TLS-08")
def test_certificate_not_expiring(host: Any, postconf: dict[str, str], record_property: Any) -> None:
    cert = host_certificate(host, postconf)
    end = run(host, f"openssl x509 -in {cert} -noout -enddate").strip()
    record_property("certificate_not_after", end.removeprefix("notAfter="))
    check = host.run(f"openssl x509 -in {cert} -noout -checkend {MIN_REMAINING_DAYS * 86400}")
    assert check.rc == 0, f"{cert} expires within {MIN_REMAINING_DAYS} days ({end})"
