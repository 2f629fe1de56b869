"""Fixtures for the directory tests: a real slapd with the project's schema and ACLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import Connection

from qnprov.directory import ldapio
from qnprov_testing.slapd import TestSlapd, running_test_slapd


@pytest.fixture
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSlapd]:
    with running_test_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture
def settings(slapd: TestSlapd) -> ldapio.LdapSettings:
    """The provisioning writer (cn=qnprov), bound through the production ACLs."""
    return ldapio.LdapSettings(url=slapd.url, base_dn=slapd.base_dn, bind_dn=slapd.writer_dn,
                               bind_password=slapd.writer_password, domain="quangninh.test")


@pytest.fixture
def writer(settings: ldapio.LdapSettings) -> Iterator[Connection]:
    connection = ldapio.connect(settings)
    yield connection
    connection.unbind()


@pytest.fixture
def password_file(slapd: TestSlapd, tmp_path: Path) -> Path:
    path = tmp_path / "writer.pw"
    path.write_text(slapd.writer_password + "\n")
    path.chmod(0o600)
    return path
