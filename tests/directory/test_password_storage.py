"""Stored password values, read back byte for byte from a real slapd.

Every path that sets a password must leave exactly a hash in userPassword: the
initial password ``qnprov accounts apply --password-scheme argon2`` writes, an
admin's password modify, and a person's own password modify (docs/ldap-schema.md,
"Passwords"). The test slapd loads the same {ARGON2} module as the openldap role
(roles/openldap/files/qnprov_argon2.c, built by the same script) with the same
parameters, and hashes the password modify operation with it.
"""

from __future__ import annotations

import csv
import re
import subprocess
from collections.abc import Callable
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


# Exactly what qnprov's module writes: argon2id v19, 16-byte salt, 32-byte hash, nothing after.
_CLEAN_ARGON2ID = re.compile(rb"\{ARGON2\}\$argon2id\$v=19\$m=(\d+),t=(\d+),p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}")


def _assert_clean_argon2id(stored: bytes) -> None:
    """The value is one argon2id hash with m >= 19456 KiB, t >= 2, p = 1, and not a byte more.

    Failure reports carry the value's length and its scheme prefix, never the hash.
    """
    match = _CLEAN_ARGON2ID.fullmatch(stored)
    scheme = b"$".join(stored.split(b"$", 2)[:2])  # "{CRYPT}$y", "{ARGON2}$argon2i": no salt, no hash
    assert match is not None, (len(stored), scheme, b"\x00" in stored)
    memory, time_cost = int(match.group(1)), int(match.group(2))
    assert (memory, time_cost) == (19456, 2), (memory, time_cost)
    problem = stored_password_problem(stored)
    assert problem is None, problem


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

    # The initial password, hashed by qnprov (argon2-cffi) on the way in.
    _assert_clean_argon2id(_stored(slapd, dn))
    assert Connection(server, dn, initial).bind()

    # An admin resets it with the password modify operation: slapd hashes it, with qnprov's module.
    root = Connection(server, slapd.root_dn, slapd.root_password, auto_bind=True, raise_exceptions=True)
    assert root.extend.standard.modify_password(dn, new_password="Admin-set pw 1")
    _assert_clean_argon2id(_stored(slapd, dn))
    assert Connection(server, dn, "Admin-set pw 1").bind()

    # The person changes it themselves, bound with the current one (what ldappasswd does).
    person = Connection(server, dn, "Admin-set pw 1", auto_bind=True, raise_exceptions=True)
    assert person.extend.standard.modify_password(dn, new_password="Self-chosen pw 2")
    first = _stored(slapd, dn)
    _assert_clean_argon2id(first)

    # ... and with the old password in the request too (`ldappasswd -a OLD`, what mail
    # clients' and webmail's password plugins send): slapd checks it against the entry.
    assert person.rebind(dn, "Self-chosen pw 2")
    assert person.extend.standard.modify_password(dn, old_password="Self-chosen pw 2",
                                                  new_password="Self-chosen pw 3")
    stored = _stored(slapd, dn)
    _assert_clean_argon2id(stored)
    assert stored != first  # a fresh salt each time
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


def test_ldappasswd_as_admin_and_as_the_person_stores_a_clean_hash(
        slapd: TestSlapd, writer: Connection, settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    """The same paths through the OpenLDAP client itself, as issue 9 saw them."""
    dn, initial = _provision_one(slapd, writer, settings, tmp_path)
    admin = subprocess.run(["ldappasswd", "-x", "-H", slapd.url, "-D", slapd.root_dn, "-y", "/dev/stdin",
                            "-s", "Admin via ldappasswd 1", dn],
                           input=slapd.root_password, capture_output=True, text=True, check=False)
    assert admin.returncode == 0, admin.stderr
    _assert_clean_argon2id(_stored(slapd, dn))
    own = subprocess.run(["ldappasswd", "-x", "-H", slapd.url, "-D", dn, "-y", "/dev/stdin",
                          "-a", "Admin via ldappasswd 1", "-s", "Own via ldappasswd 2"],
                         input="Admin via ldappasswd 1", capture_output=True, text=True, check=False)
    assert own.returncode == 0, own.stderr
    _assert_clean_argon2id(_stored(slapd, dn))
    whoami = subprocess.run(["ldapwhoami", "-x", "-H", slapd.url, "-D", dn, "-y", "/dev/stdin"],
                            input="Own via ldappasswd 2", capture_output=True, text=True, check=False)
    assert whoami.returncode == 0 and whoami.stdout.strip() == f"dn:{dn}", whoami.stderr
    assert not Connection(Server("127.0.0.1", port=slapd.port), dn, initial).bind()


def _argon2(variant: str, memory: int, time_cost: int) -> Callable[[str], bytes]:
    from argon2 import PasswordHasher, Type

    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory, parallelism=1,
                            type={"i": Type.I, "id": Type.ID, "d": Type.D}[variant])
    return lambda password: b"{ARGON2}" + hasher.hash(password).encode()


@pytest.mark.parametrize(("name", "make", "verifies"), [
    # What Debian's module wrote (argon2i, 4 MiB, t=3), clean and with its NUL and stray byte.
    ("argon2i as Debian's module wrote it", _argon2("i", 4096, 3), True),
    ("argon2i with Debian's trailing junk", lambda pw: _argon2("i", 4096, 3)(pw) + b"\x00\xb8", True),
    ("argon2id from qnprov", _argon2("id", 19456, 2), True),
    ("argon2d, which no release wrote", _argon2("d", 19456, 2), False),
])
def test_hashes_written_earlier_still_verify(slapd: TestSlapd, writer: Connection,
                                             settings: ldapio.LdapSettings, tmp_path: Path,
                                             name: str, make: Callable[[str], bytes], verifies: bool) -> None:
    """qnprov's module verifies by the variant the value names, so old hashes keep working."""
    from ldap3 import MODIFY_REPLACE

    dn, _ = _provision_one(slapd, writer, settings, tmp_path)
    root = Connection(Server("127.0.0.1", port=slapd.port), slapd.root_dn, slapd.root_password,
                      auto_bind=True, raise_exceptions=True)
    value = make("Old pw 1")
    assert root.modify(dn, {"userPassword": [(MODIFY_REPLACE, [value])]})
    assert _stored(slapd, dn) == value
    server = Server("127.0.0.1", port=slapd.port)
    assert Connection(server, dn, "Old pw 1").bind() is verifies, name
    assert not Connection(server, dn, "Old pw 2").bind(), name
    if verifies:
        # The next change, by the person, replaces it with a clean argon2id hash.
        person = Connection(server, dn, "Old pw 1", auto_bind=True, raise_exceptions=True)
        assert person.extend.standard.modify_password(dn, old_password="Old pw 1", new_password="New pw 2")
        _assert_clean_argon2id(_stored(slapd, dn))


def test_debian_argon2_module_appends_junk_which_the_check_refuses(
        slapd: TestSlapd, writer: Connection, settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    """Why the role never loads Debian's argon2 module beside qnprov's: the bug, reproduced.

    Both register {ARGON2} and slapd hashes with the module it loaded last, so loading
    Debian's after qnprov's brings the junk back (tasks/config.yml removes it offline).
    """
    dn, _ = _provision_one(slapd, writer, settings, tmp_path)
    subprocess.run(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", slapd.ldapi_url], check=True,
                   capture_output=True, text=True,
                   input="dn: cn=module{0},cn=config\nchangetype: modify\n"
                         "add: olcModuleLoad\nolcModuleLoad: argon2\n")
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
    assert role_vars["__openldap_argon2_module_file"] == passwords.SLAPD_ARGON2_MODULE
    assert role_vars["__openldap_argon2_module_args"] == passwords.SLAPD_ARGON2_MODULE_ARGS
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


OURS = "{1}/usr/local/lib/ldap/qnprov_argon2.so m=19456 t=2 p=1"


def _cn_config(password_hash: str, modules: list[str]) -> list[dict[str, list[str]]]:
    return [{"dn": ["cn=config"]},
            {"dn": ["cn=module{0},cn=config"], "olcmoduleload": ["{0}back_mdb", *modules]},
            {"dn": ["olcDatabase={-1}frontend,cn=config"], "olcpasswordhash": [password_hash]}]


@pytest.mark.parametrize(("password_hash", "modules", "problem"), [
    ("{ARGON2}", [OURS], None),
    ("{ARGON2}", ["{1}/usr/local/lib/ldap/qnprov_argon2.so m=65536 t=3 p=1"], None),
    ("{CRYPT}", [OURS], "olcPasswordHash allows ['{CRYPT}']"),
    ("{SSHA}", [OURS], "olcPasswordHash allows ['{SSHA}']"),
    ("{ARGON2}", ["{1}argon2"], "Debian's argon2 module is loaded (['argon2'])"),
    ("{ARGON2}", [OURS, "{2}argon2 m=19456"], "Debian's argon2 module is loaded"),
    ("{ARGON2}", [], "qnprov_argon2.so is loaded 0 times"),
    ("{ARGON2}", ["{1}/usr/local/lib/ldap/qnprov_argon2.so"], "['m=None', 't=None', 'p=None']"),
    ("{ARGON2}", ["{1}/usr/local/lib/ldap/qnprov_argon2.so m=4096 t=2 p=1"], "['m=4096']"),
    ("{ARGON2}", ["{1}/usr/local/lib/ldap/qnprov_argon2.so m=19456 t=1 p=4"], "['t=1', 'p=4']"),
])
def test_control_qn_ldap_08_judges_slapd_hashing(password_hash: str, modules: list[str],
                                                 problem: str | None, request: pytest.FixtureRequest) -> None:
    # The control suite registers its marker in its own conftest, which this run does not load.
    request.config.addinivalue_line("markers", "control(id): the control a suite test verifies")
    from qnprov.controls.suite import test_openldap as control

    config = _cn_config(password_hash, modules)
    if problem is None:
        control.test_password_hash_scheme(config)
    else:
        with pytest.raises(AssertionError, match=re.escape(problem)):
            control.test_password_hash_scheme(config)


def test_control_qn_ldap_08_judges_the_test_slapds_config(slapd: TestSlapd) -> None:
    """The control passes on the test slapd's real cn=config (the role's settings)."""
    from qnprov.controls import hoststate
    from qnprov.controls.suite import test_openldap as control

    dump = subprocess.run(["slapcat", "-n0", "-F", str(slapd.workdir / "slapd.d"), "-o", "ldif-wrap=no"],
                          capture_output=True, text=True, check=True).stdout
    config = hoststate.parse_ldif(dump)
    control.test_password_hash_scheme(config)
    assert any("qnprov_argon2.so m=19456 t=2 p=1" in v for e in config for v in e.get("olcmoduleload", []))


def _module_list_filter() -> Callable[..., str]:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "roles" / "openldap" / "filter_plugins" / "module_list.py"
    spec = importlib.util.spec_from_file_location("module_list", path)
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin.FilterModule().filters()["openldap_module_list_ldif"]  # type: ignore[no-any-return]


WANTED = "/usr/local/lib/ldap/qnprov_argon2.so m=19456 t=2 p=1"


@pytest.mark.parametrize(("loaded", "ldif"), [
    (["{0}back_mdb", "{1}" + WANTED], ""),
    (["{0}back_mdb", "{1}argon2"],
     "delete: olcModuleLoad\nolcModuleLoad: {1}argon2\n-\nadd: olcModuleLoad\nolcModuleLoad: " + WANTED + "\n-\n"),
    (["{0}back_mdb", "{1}argon2.so m=4096", "{2}" + WANTED],
     "delete: olcModuleLoad\nolcModuleLoad: {1}argon2.so m=4096\n-\n"),
    (["{0}back_mdb", "{1}/usr/local/lib/ldap/qnprov_argon2.so m=4096 t=2 p=1"],
     "delete: olcModuleLoad\nolcModuleLoad: {1}/usr/local/lib/ldap/qnprov_argon2.so m=4096 t=2 p=1\n-\n"
     "add: olcModuleLoad\nolcModuleLoad: " + WANTED + "\n-\n"),
    ("{0}back_mdb", "add: olcModuleLoad\nolcModuleLoad: " + WANTED + "\n-\n"),
])
def test_module_list_change(loaded: str | list[str], ldif: str) -> None:
    change = _module_list_filter()(loaded, WANTED)
    expected = "dn: cn=module{0},cn=config\nchangetype: modify\n" + ldif if ldif else ""
    assert change == expected


def test_directory_from_the_older_release_is_moved_to_qnprovs_module(
        slapd: TestSlapd, writer: Connection, settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    """The role's offline step (tasks/config.yml): slapmodify with the filter's LDIF, slaptest, start."""
    from qnprov_testing.slapd import argon2_module

    dn, _ = _provision_one(slapd, writer, settings, tmp_path)
    config_dir = str(slapd.workdir / "slapd.d")
    ours = f"{argon2_module()} m=19456 t=2 p=1"

    def loaded() -> list[str]:
        dump = subprocess.run(["slapcat", "-n0", "-F", config_dir, "-a", "(objectClass=olcModuleList)",
                               "-o", "ldif-wrap=no"], capture_output=True, text=True, check=True).stdout
        return [line.removeprefix("olcModuleLoad: ") for line in dump.splitlines()
                if line.startswith("olcModuleLoad: ")]

    def slapmodify(ldif: str) -> None:
        result = subprocess.run(["slapmodify", "-n0", "-F", config_dir], input=ldif,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr

    # The older release's module list: Debian's argon2 only.
    slapd.stop()
    slapmodify(f"dn: cn=module{{0}},cn=config\nchangetype: modify\ndelete: olcModuleLoad\n"
               f"olcModuleLoad: {{1}}{ours}\n-\nadd: olcModuleLoad\nolcModuleLoad: argon2\n-\n")
    assert loaded() == ["{0}back_mdb", "{1}argon2"]
    slapd.start()
    root = Connection(Server("127.0.0.1", port=slapd.port), slapd.root_dn, slapd.root_password,
                      auto_bind=True, raise_exceptions=True)
    assert root.extend.standard.modify_password(dn, new_password="Old release pw 1")
    assert b"\x00" in _stored(slapd, dn)  # the junk this change removes

    # The role's step.
    change = _module_list_filter()(loaded(), ours)
    assert "olcModuleLoad: {1}argon2" in change
    slapd.stop()
    slapmodify(change)
    check = subprocess.run(["slaptest", "-u", "-F", config_dir], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert loaded() == ["{0}back_mdb", "{1}" + ours]
    assert _module_list_filter()(loaded(), ours) == ""  # converged: nothing to do next run
    slapd.start()

    server = Server("127.0.0.1", port=slapd.port)
    assert Connection(server, dn, "Old release pw 1").bind()  # the junk-tailed argon2i still verifies
    root = Connection(server, slapd.root_dn, slapd.root_password, auto_bind=True, raise_exceptions=True)
    assert root.extend.standard.modify_password(dn, new_password="New release pw 2")
    _assert_clean_argon2id(_stored(slapd, dn))
    assert Connection(server, dn, "New release pw 2").bind()
