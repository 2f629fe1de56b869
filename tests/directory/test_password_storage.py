"""Stored password values, read back byte for byte from a real slapd.

Every path that sets a password must leave exactly a hash in userPassword: the
initial password ``qnprov accounts apply --password-scheme argon2`` writes, an
admin's password modify, and a person's own password modify (docs/ldap-schema.md,
"Passwords"). The test slapd carries the same olcPasswordHash and
olcPasswordCryptSaltFormat as the openldap role.
"""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest
from ldap3 import BASE, Connection, Server

from qnprov.directory import ldapio
from qnprov.directory.passwords import CredentialsWriter, stored_password_problem
from qnprov.directory.sync import SyncRequest, make_plan, refusal
from qnprov_testing import synthetic
from qnprov_testing.slapd import TestSlapd

pytestmark = pytest.mark.slapd

AGENCIES = synthetic.agencies(1)


def _stored(slapd: TestSlapd, dn: str) -> bytes:
    """The raw userPassword value, read as the root DN (bytes, nothing decoded)."""
    root = Connection(Server("127.0.0.1", port=slapd.port), slapd.root_dn, slapd.root_password,
                      auto_bind=True, raise_exceptions=True)
    root.search(dn, "(objectClass=*)", BASE, attributes=["userPassword"])
    (value,) = root.response[0]["raw_attributes"]["userPassword"]
    root.unbind()
    return bytes(value)


def _provision_one(slapd: TestSlapd, writer: Connection, settings: ldapio.LdapSettings,
                   tmp_path: Path) -> tuple[str, str]:
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES)
    synthetic.write_roster_csv(tmp_path / "roster.csv", synthetic.roster(AGENCIES, 1))
    request = SyncRequest(agencies_file=tmp_path / "agencies.csv", roster_file=tmp_path / "roster.csv")
    plan, _ = make_plan(writer, settings, request)
    assert refusal(plan, request) is None
    credentials = CredentialsWriter(tmp_path / "creds")
    ldapio.apply_plan(writer, plan, credentials=credentials, password_scheme="argon2")
    credentials.close()
    row = next(csv.DictReader((tmp_path / "creds" / f"{AGENCIES[0].code}.csv").open()))
    dn = f"uid={row['employee_id']},ou=people,ou={AGENCIES[0].code},ou=agencies,{slapd.base_dn}"
    return dn, row["initial_password"]


def test_every_password_path_stores_a_clean_hash(slapd: TestSlapd, writer: Connection,
                                                 settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    server = Server("127.0.0.1", port=slapd.port)
    dn, initial = _provision_one(slapd, writer, settings, tmp_path)

    stored = _stored(slapd, dn)
    scheme_ok = stored.startswith(b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$")  # the hash stays out of a failure report
    assert scheme_ok, stored[:len(b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$")]
    problem = stored_password_problem(stored)
    assert problem is None, problem

    # An admin resets it with the password modify operation: slapd hashes it.
    root = Connection(server, slapd.root_dn, slapd.root_password, auto_bind=True, raise_exceptions=True)
    assert root.extend.standard.modify_password(dn, new_password="Admin-set pw 1")
    stored = _stored(slapd, dn)
    scheme_ok = stored.startswith(b"{CRYPT}$y$jAT$")  # the hash stays out of a failure report
    assert scheme_ok, stored[:len(b"{CRYPT}$y$jAT$")]
    problem = stored_password_problem(stored)
    assert problem is None, problem

    # The person changes it themselves, bound with the current one (what ldappasswd does).
    person = Connection(server, dn, "Admin-set pw 1", auto_bind=True, raise_exceptions=True)
    assert person.extend.standard.modify_password(dn, new_password="Self-chosen pw 2")
    stored = _stored(slapd, dn)
    scheme_ok = stored.startswith(b"{CRYPT}$y$jAT$")  # the hash stays out of a failure report
    assert scheme_ok, stored[:len(b"{CRYPT}$y$jAT$")]
    problem = stored_password_problem(stored)
    assert problem is None, problem

    # ... and with the old password in the request too (`ldappasswd -a OLD`, what mail
    # clients' and webmail's password plugins send): slapd checks it against the entry.
    assert person.rebind(dn, "Self-chosen pw 2")
    assert person.extend.standard.modify_password(dn, old_password="Self-chosen pw 2",
                                                  new_password="Self-chosen pw 3")
    stored = _stored(slapd, dn)
    scheme_ok = stored.startswith(b"{CRYPT}$y$jAT$")  # the hash stays out of a failure report
    assert scheme_ok, stored[:len(b"{CRYPT}$y$jAT$")]
    problem = stored_password_problem(stored)
    assert problem is None, problem
    # A wrong old password is refused, and the password stays as it was.
    wrong = Connection(server, dn, "Self-chosen pw 3", auto_bind=True)
    assert not wrong.extend.standard.modify_password(dn, old_password="not the password",
                                                     new_password="Self-chosen pw 4")
    assert wrong.result["description"] == "unwillingToPerform", wrong.result
    assert _stored(slapd, dn) == stored

    assert Connection(server, dn, "Self-chosen pw 3").bind()
    assert not Connection(server, dn, "Self-chosen pw 2").bind()
    assert not Connection(server, dn, "Admin-set pw 1").bind()
    assert not Connection(server, dn, initial).bind()


def test_debian_argon2_module_appends_junk_which_the_check_refuses(
        slapd: TestSlapd, writer: Connection, settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    """Why slapd does not hash with {ARGON2}: the bug this design avoids, reproduced."""
    dn, _ = _provision_one(slapd, writer, settings, tmp_path)
    subprocess.run(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", slapd.ldapi_url], check=True,
                   capture_output=True, text=True,
                   input="dn: olcDatabase={-1}frontend,cn=config\nchangetype: modify\n"
                         "replace: olcPasswordHash\nolcPasswordHash: {ARGON2}\n")
    root = Connection(Server("127.0.0.1", port=slapd.port), slapd.root_dn, slapd.root_password,
                      auto_bind=True, raise_exceptions=True)
    assert root.extend.standard.modify_password(dn, new_password="Admin-set pw 1")
    stored = _stored(slapd, dn)
    assert stored.startswith(b"{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$")
    text_end = stored.index(b"\x00")
    assert len(stored) - text_end == 2, stored[text_end:]  # a NUL, then one stray byte
    assert stored_password_problem(stored) is not None
    assert stored_password_problem(stored[:text_end]) is not None  # argon2i, 4 MiB: too weak anyway


def test_role_and_test_slapd_hash_like_qnprov() -> None:
    """The openldap role's slapd settings and its own argon2id parameters are qnprov's."""
    import importlib.util

    import yaml

    from qnprov.directory import passwords

    role = Path(__file__).resolve().parents[2] / "roles" / "openldap"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    role_vars = yaml.safe_load((role / "vars" / "main.yml").read_text())
    assert defaults["openldap_password_hash"] == passwords.SLAPD_PASSWORD_HASH
    assert role_vars["__openldap_crypt_salt_format"] == passwords.SLAPD_CRYPT_SALT_FORMAT
    spec = importlib.util.spec_from_file_location("argon2id_hash", role / "filter_plugins" / "argon2id_hash.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert (plugin.MEMORY_KIB, plugin.TIME_COST, plugin.PARALLELISM) == (
        passwords.ARGON2_MEMORY_KIB, passwords.ARGON2_TIME_COST, passwords.ARGON2_PARALLELISM)
    hashed = plugin.FilterModule().filters()["argon2id_hash"]("a service password")
    assert hashed.startswith("{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$")
    problem = stored_password_problem(hashed)
    assert problem is None, problem


@pytest.mark.parametrize(("value", "problem"), [
    (b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$" + b"A" * 43, None),
    (b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$" + b"A" * 43 + b"\x00\xb8", "not ASCII"),
    (b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$" + b"A" * 43 + b"\x00\x00", "control"),
    (b"{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0$" + b"A" * 43, "not a clean argon2id"),
    (b"{ARGON2}$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0$" + b"A" * 43, "too weak: m=4096"),
    (b"{CRYPT}$y$jAT$" + b"a" * 24 + b"$" + b"b" * 43, None),
    (b"{CRYPT}$y$j9T$" + b"a" * 24 + b"$" + b"b" * 43, "16384 KiB"),
    (b"{CRYPT}$6$salt$" + b"b" * 86, "not a yescrypt"),
    (b"{SSHA}" + b"Q" * 32, None),
    (b"secret", "cleartext"),
])
def test_stored_password_rule(value: bytes, problem: str | None) -> None:
    found = stored_password_problem(value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert value.decode("latin-1") not in found


def _cn_config(password_hash: str, salt_format: str | None) -> list[dict[str, list[str]]]:
    global_entry: dict[str, list[str]] = {"dn": ["cn=config"]}
    if salt_format is not None:
        global_entry["olcpasswordcryptsaltformat"] = [salt_format]
    return [global_entry, {"dn": ["olcDatabase={-1}frontend,cn=config"], "olcpasswordhash": [password_hash]}]


@pytest.mark.parametrize(("password_hash", "salt_format", "problem"), [
    ("{CRYPT}", "$y$jAT$%.24s", None),
    ("{SSHA}", None, None),
    ("{ARGON2}", None, "olcPasswordHash allows ['{ARGON2}']"),
    ("{CRYPT}", None, "DES crypt"),
    ("{CRYPT}", "$y$j9T$%.24s", "16384 KiB"),
    ("{CRYPT}", "$6$%.16s", "not a yescrypt"),
])
def test_control_qn_ldap_08_judges_slapd_hashing(password_hash: str, salt_format: str | None,
                                                 problem: str | None, request: pytest.FixtureRequest) -> None:
    # The control suite registers its marker in its own conftest, which this run does not load.
    request.config.addinivalue_line("markers", "control(id): the control a suite test verifies")
    from qnprov.controls.suite import test_openldap as control

    config = _cn_config(password_hash, salt_format)
    if problem is None:
        control.test_password_hash_scheme(config)
    else:
        with pytest.raises(AssertionError, match=re.escape(problem)):
            control.test_password_hash_scheme(config)
