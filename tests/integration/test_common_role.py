"""The common role's promises, checked on a converged host (lab or molecule).

Needs QNPROV_TEST_HOST (the container name; the integration conftest sets it
when it brings the lab up). Without it every test here fails.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import testinfra

pytestmark = pytest.mark.lab

TLS_DIR = "/etc/qnprov/tls"
SIX_MONTHS_IN_DAYS = 184  # the longest six consecutive calendar months


@pytest.fixture(scope="module")
def host() -> Any:
    container = os.environ.get("QNPROV_TEST_HOST", "")
    if not container:
        raise RuntimeError("QNPROV_TEST_HOST is not set; these tests need a converged host")
    return testinfra.get_host(f"podman://{container}")


def test_time_zone_is_vietnam(host: Any) -> None:
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Asia/Ho_Chi_Minh"
    assert host.file("/etc/timezone").content_string.strip() == "Asia/Ho_Chi_Minh"
    assert host.check_output("date +%z") == "+0700"


def test_timesyncd_is_enabled(host: Any) -> None:
    assert host.service("systemd-timesyncd").is_enabled


def test_journal_is_persistent_and_kept_at_least_six_months(host: Any) -> None:
    assert host.file("/var/log/journal").is_directory
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    settings = dict(line.split("=", 1) for line in config.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Storage"] == "persistent"
    match = re.fullmatch(r"(\d+)\s*(month|months|M|year|years|y)", settings["MaxRetentionSec"])
    assert match, settings["MaxRetentionSec"]
    days = int(match.group(1)) * (365 if match.group(2).startswith("y") else 30.44)
    assert days >= SIX_MONTHS_IN_DAYS


def test_tls_files_have_safe_owners_and_modes(host: Any) -> None:
    key = host.file(f"{TLS_DIR}/privkey.pem")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    for name in ("fullchain.pem", "ca.pem"):
        public = host.file(f"{TLS_DIR}/{name}")
        assert (public.user, public.mode) == ("root", 0o644)


def test_certificate_is_ecdsa_p256_for_the_host_and_loopback(host: Any) -> None:
    text = host.check_output(f"openssl x509 -in {TLS_DIR}/fullchain.pem -noout -text")
    assert "NIST CURVE: P-256" in text
    fqdn = host.check_output("hostname -f")
    assert f"DNS:{fqdn}" in text
    assert "DNS:localhost" in text
    assert "IP Address:127.0.0.1" in text


def test_certificate_and_key_match(host: Any) -> None:
    from_cert = host.check_output(f"openssl x509 -in {TLS_DIR}/fullchain.pem -noout -pubkey")
    from_key = host.check_output(f"openssl pkey -in {TLS_DIR}/privkey.pem -pubout")
    assert from_cert == from_key


def test_chain_verifies_against_the_system_trust_store(host: Any) -> None:
    # No -CAfile: the CA must have reached /etc/ssl/certs through update-ca-certificates.
    result = host.run(f"openssl verify {TLS_DIR}/fullchain.pem")
    assert result.rc == 0, result.stderr
    assert host.file("/usr/local/share/ca-certificates/qnprov-ca.crt").exists
