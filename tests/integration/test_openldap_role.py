"""The openldap role's promises, checked on a converged host (lab or molecule).

The integration conftest brings the lab up (or honours a host already named
in QNPROV_TEST_HOST) and exports where it is:

* QNPROV_TEST_HOST       container name (testinfra ``podman://`` backend)
* QNPROV_TEST_BASE_DN    the DIT suffix
* QNPROV_TEST_ACCOUNTS   JSON list of demo accounts, ``{"address", "password"}``
* QNPROV_STATE_DIR       lab state; ``secrets/ldap_postfix`` and
                         ``secrets/ldap_qnprov`` hold the service passwords

If any of them is missing every test here fails: a selected test must never
pass by not running.

Checks that need a password run through ``podman exec -i`` with the password
on stdin (``-y /dev/stdin``), so no secret appears on a command line, in the
container's process list, or in a failure report.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra

from qnprov.directory.passwords import generate_password, hash_passwords, stored_password_problem

pytestmark = pytest.mark.lab

CA_FILE = "/etc/qnprov/tls/ca.pem"
STARTTLS_URI = "ldap://127.0.0.1"
LDAPS_URI = "ldaps://127.0.0.1"
# Make the client tools verify the server certificate against the lab CA only.
TLS_ENV = {"LDAPTLS_CACERT": CA_FILE, "LDAPTLS_REQCERT": "demand"}
# What qnprov and the role write, and what slapd's password modify writes (qnprov's module).
ARGON2ID_PREFIX = b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$"


@dataclass(frozen=True)
class DemoAccount:
    dn: str
    address: str
    agency: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Lab:
    container: str
    host: Any  # testinfra.host.Host
    base_dn: str
    # Secrets stay out of repr(), which pytest prints for a failing test.
    postfix_password: str = field(repr=False)
    qnprov_password: str = field(repr=False)
    account_logins: list[dict[str, str]] = field(repr=False)

    @property
    def postfix_dn(self) -> str:
        return f"cn=postfix,ou=services,{self.base_dn}"

    @property
    def qnprov_dn(self) -> str:
        return f"cn=qnprov,ou=services,{self.base_dn}"


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


def _required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"{name} is not set; these tests need a converged host (see the module docstring)")
    return value


def _read_secret(path: Path) -> str:
    # Ansible's password lookup may append " salt=..." after the password.
    return path.read_text(encoding="utf-8").split()[0]


@pytest.fixture(scope="module")
def lab() -> Lab:
    container = _required_env("QNPROV_TEST_HOST")
    secrets_dir = Path(_required_env("QNPROV_STATE_DIR")) / "secrets"
    account_logins = json.loads(_required_env("QNPROV_TEST_ACCOUNTS"))
    if not account_logins:
        raise RuntimeError("QNPROV_TEST_ACCOUNTS lists no account; the bind tests need one")
    return Lab(
        container=container,
        host=testinfra.get_host(f"podman://{container}"),
        base_dn=_required_env("QNPROV_TEST_BASE_DN"),
        postfix_password=_read_secret(secrets_dir / "ldap_postfix"),
        qnprov_password=_read_secret(secrets_dir / "ldap_qnprov"),
        account_logins=account_logins,
    )


@pytest.fixture(scope="module")
def accounts(lab: Lab) -> list[DemoAccount]:
    """The demo accounts as the directory holds them, found by address as cn=postfix."""
    found = []
    for login in lab.account_logins:
        result = run_with_secret(
            lab,
            [
                "ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn,
                "-b", lab.base_dn, f"(&(objectClass=qnMailAccount)(mail={login['address']}))", "qnAgencyCode",
            ],
            lab.postfix_password,
        )  # fmt: skip
        assert result.rc == 0, result.stderr
        entry = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
        assert "dn" in entry, f"no account with mail {login['address']}"
        found.append(DemoAccount(entry["dn"], login["address"], entry.get("qnAgencyCode", ""), login["password"]))
    return found


def run_with_secret(lab: Lab, argv: list[str], secret: str, ldif: str | None = None) -> Result:
    """Run argv in the container with the secret as its stdin password file (-y /dev/stdin).

    When ldif is given it goes through a second descriptor: the secret is
    written to a 0600 temporary file first, read by -y, and removed.
    """
    env_args = [arg for key, value in TLS_ENV.items() for arg in ("--env", f"{key}={value}")]
    if ldif is None:
        command = ["podman", "exec", "-i", *env_args, lab.container, *argv, "-y", "/dev/stdin"]
        completed = subprocess.run(command, input=secret, capture_output=True, text=True, timeout=60, check=False)
        return Result(completed.returncode, completed.stdout, completed.stderr)
    # Two inputs: the password goes to a private temporary file via stdin,
    # then the LDIF is the stdin of the LDAP tool.
    make_file = subprocess.run(
        ["podman", "exec", "-i", lab.container, "sh", "-c", "umask 077; f=$(mktemp); cat > $f; echo $f"],
        input=secret,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret_file = make_file.stdout.strip()
    try:
        command = ["podman", "exec", "-i", *env_args, lab.container, *argv, "-y", secret_file]
        completed = subprocess.run(command, input=ldif, capture_output=True, text=True, timeout=60, check=False)
        return Result(completed.returncode, completed.stdout, completed.stderr)
    finally:
        subprocess.run(["podman", "exec", lab.container, "rm", "-f", secret_file], check=False, timeout=60)


def test_slapd_runs_as_openldap_and_starts_at_boot(lab: Lab) -> None:
    service = lab.host.service("slapd")
    assert service.is_running
    assert service.is_enabled
    main_pid = lab.host.check_output("systemctl show -p MainPID --value slapd")
    openldap_uid = lab.host.user("openldap").uid
    assert lab.host.file(f"/proc/{main_pid}/status").contains(f"^Uid:[[:space:]]*{openldap_uid}[[:space:]]")


def test_listeners_are_loopback_ldap_and_ldaps(lab: Lab) -> None:
    assert lab.host.socket("tcp://127.0.0.1:389").is_listening
    assert not lab.host.socket("tcp://0.0.0.0:389").is_listening
    assert lab.host.socket("tcp://0.0.0.0:636").is_listening or lab.host.socket("tcp://:::636").is_listening


def test_key_copies_are_private(lab: Lab) -> None:
    slapd_key = lab.host.file("/etc/ldap/tls/privkey.pem")
    assert (slapd_key.user, slapd_key.group, slapd_key.mode) == ("openldap", "openldap", 0o400)
    host_key = lab.host.file("/etc/qnprov/tls/privkey.pem")
    assert (host_key.user, host_key.mode) == ("root", 0o600)


def test_configuration_passes_slaptest(lab: Lab) -> None:
    result = lab.host.run("runuser -u openldap -- slaptest -u -F /etc/ldap/slapd.d")
    assert result.rc == 0, result.stderr


def test_global_hardening_settings(lab: Lab) -> None:
    config = lab.host.check_output(
        "ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H ldapi:/// -b cn=config -s base "
        "olcDisallows olcSecurity olcTLSProtocolMin olcLocalSSF"
    )
    assert "olcDisallows: bind_anon" in config
    assert "olcSecurity: ssf=128 simple_bind=128" in config
    assert "olcTLSProtocolMin: 3.3" in config
    database = lab.host.check_output(
        "ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H ldapi:/// -b 'olcDatabase={1}mdb,cn=config' "
        "-s base olcRequires olcRootPW olcSuffix"
    )
    assert "olcRequires: authc" in database
    assert f"olcSuffix: {lab.base_dn}" in database
    root_pw_line = next(line for line in database.splitlines() if line.startswith("olcRootPW"))
    assert _decode_ldif_value(root_pw_line).startswith("{ARGON2}$argon2id$")


def test_anonymous_bind_is_refused(lab: Lab) -> None:
    result = lab.host.run(f"LDAPTLS_CACERT={CA_FILE} ldapwhoami -x -H {STARTTLS_URI} -ZZ")
    assert result.rc == 48, result.stderr
    assert "anonymous bind disallowed" in result.stderr


def test_simple_bind_without_tls_is_refused_even_with_the_right_password(lab: Lab) -> None:
    result = run_with_secret(lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-D", lab.postfix_dn], lab.postfix_password)
    assert result.rc == 13, result.stderr
    assert "Confidentiality required" in result.stderr


def test_postfix_binds_with_starttls_and_the_lab_ca(lab: Lab) -> None:
    result = run_with_secret(
        lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn], lab.postfix_password
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == f"dn:{lab.postfix_dn}"


def test_postfix_binds_over_ldaps(lab: Lab) -> None:
    result = run_with_secret(lab, ["ldapwhoami", "-x", "-H", LDAPS_URI, "-D", lab.postfix_dn], lab.postfix_password)
    assert result.rc == 0, result.stderr


def test_wrong_password_is_refused(lab: Lab) -> None:
    result = run_with_secret(
        lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn], lab.postfix_password + "x"
    )
    assert result.rc == 49, result.stderr


def _s_client(lab: Lab, options: str) -> str:
    return str(lab.host.run(f"openssl s_client -connect 127.0.0.1:636 {options} -CAfile {CA_FILE} </dev/null").stdout)


@pytest.mark.parametrize("protocol", ["-tls1", "-tls1_1"])
def test_tls_below_1_2_is_refused(lab: Lab, protocol: str) -> None:
    assert "Cipher is (NONE)" in _s_client(lab, protocol)


def test_tls_1_2_with_aead_cipher_and_verified_chain(lab: Lab) -> None:
    output = _s_client(lab, "-tls1_2")
    assert "Verify return code: 0 (ok)" in output
    session = next(line for line in output.splitlines() if line.startswith("New, "))
    assert session.startswith("New, TLSv1.2, Cipher is ECDHE-")
    assert "GCM" in session or "CHACHA20" in session


def test_tls_1_3_is_offered(lab: Lab) -> None:
    assert "New, TLSv1.3, Cipher is TLS_" in _s_client(lab, "-tls1_3")


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_cbc_ciphers_are_refused(lab: Lab, cipher: str) -> None:
    assert "Cipher is (NONE)" in _s_client(lab, f"-tls1_2 -cipher {cipher}")


def test_postfix_reads_mail_but_never_user_password(lab: Lab, accounts: list[DemoAccount]) -> None:
    result = run_with_secret(
        lab,
        [
            "ldapsearch", "-x", "-LLL", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn,
            "-b", accounts[0].dn, "-s", "base", "(objectClass=*)", "mail", "userPassword",
        ],
        lab.postfix_password,
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    assert f"mail: {accounts[0].address}" in result.stdout
    assert "userPassword" not in result.stdout


def test_postfix_cannot_write(lab: Lab, accounts: list[DemoAccount]) -> None:
    ldif = f"dn: {accounts[0].dn}\nchangetype: modify\nadd: description\ndescription: written by postfix\n"
    result = run_with_secret(
        lab, ["ldapmodify", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn], lab.postfix_password, ldif
    )
    assert result.rc == 50, result.stderr
    assert "Insufficient access" in result.stderr


def test_qnprov_can_write(lab: Lab, accounts: list[DemoAccount]) -> None:
    marker = f"qnprov write test {os.getpid()}"
    add = f"dn: {accounts[0].dn}\nchangetype: modify\nadd: description\ndescription: {marker}\n"
    remove = f"dn: {accounts[0].dn}\nchangetype: modify\ndelete: description\ndescription: {marker}\n"
    argv = ["ldapmodify", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.qnprov_dn]
    added = run_with_secret(lab, argv, lab.qnprov_password, add)
    assert added.rc == 0, added.stderr
    removed = run_with_secret(lab, argv, lab.qnprov_password, remove)
    assert removed.rc == 0, removed.stderr


def test_demo_accounts_bind_with_their_passwords(lab: Lab, accounts: list[DemoAccount]) -> None:
    for account in accounts:
        result = run_with_secret(
            lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", account.dn], account.password
        )
        assert result.rc == 0, f"{account.address}: {result.stderr}"
        assert result.stdout.strip() == f"dn:{account.dn}"


# Runs inside the container with python3-ldap (the role's own dependency): one LDAP
# operation over StartTLS with the lab CA, its secrets read as JSON from stdin.
_LDAP_STEP = r"""
import json, sys
import ldap, ldap.modlist
step = json.load(sys.stdin)
conn = ldap.initialize("ldap://127.0.0.1")
conn.set_option(ldap.OPT_X_TLS_CACERTFILE, "/etc/qnprov/tls/ca.pem")
conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
conn.start_tls_s()
conn.simple_bind_s(step["bind_dn"], step["bind_pw"])
if step["op"] == "add":
    conn.add_s(step["dn"], ldap.modlist.addModlist(
        {k: [v.encode() for v in vs] for k, vs in step["attributes"].items()}))
elif step["op"] == "passwd":  # RFC 3062 password modify, what ldappasswd sends
    conn.passwd_s(step["dn"], None, step["new"])
elif step["op"] == "delete":
    conn.delete_s(step["dn"])
print("ok")
"""


def _ldap_step(lab: Lab, **step: object) -> None:
    completed = subprocess.run(
        ["podman", "exec", "-i", lab.container, "python3", "-c", _LDAP_STEP],
        input=json.dumps(step), capture_output=True, text=True, timeout=60, check=False,
    )
    # The step's arguments are not echoed: they hold passwords.
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", (
        f"LDAP {step['op']} failed: {completed.stderr[-600:]}")


def _stored_passwords(lab: Lab, search_filter: str = "(userPassword=*)") -> dict[str, bytes]:
    """dn (lower case) -> the raw userPassword bytes, read with slapcat, nothing decoded as text."""
    dump = lab.host.check_output(
        "slapcat -o ldif-wrap=no -F /etc/ldap/slapd.d -b %s -a %s", lab.base_dn, search_filter
    )
    by_dn: dict[str, bytes] = {}
    dn = ""
    for line in dump.splitlines():
        if line.startswith("dn:"):
            dn = _decode_ldif_value(line).lower()
        elif line.startswith("userPassword:"):
            name_end = line.index(":")
            rest = line[name_end + 1:]
            by_dn[dn] = base64.b64decode(rest[1:].strip()) if rest.startswith(":") else rest.strip().encode()
    return by_dn


def test_stored_passwords_are_clean_hashes(lab: Lab, accounts: list[DemoAccount]) -> None:
    """Which entries carry which scheme (docs/ldap-schema.md, "Passwords"):

    * olcRootPW and the service accounts the role created: {ARGON2} argon2id, m=19456,t=2,p=1,
      computed on the controller (a service password the role later rotates goes through
      password modify, which qnprov's slapd module hashes the same way);
    * the demo accounts, whose passwords the role sets with password modify: the same argon2id;
    * accounts from ``qnprov accounts apply``: {ARGON2} argon2id with --password-scheme argon2,
      {SSHA} with the default for random initial passwords.

    Every value is exactly the hash: no NUL or stray byte after it.
    """
    by_dn = _stored_passwords(lab)
    assert len(by_dn) >= 3 + len(accounts)
    problems = {dn: problem for dn, value in by_dn.items() if (problem := stored_password_problem(value))}
    assert not problems, f"userPassword values that are not one clean hash: {problems}"
    services = {d: v for d, v in by_dn.items() if ",ou=services," in d}
    assert len(services) == 3
    assert all(v.startswith(ARGON2ID_PREFIX) for v in services.values()), services.keys()
    demo = {d: v for d, v in by_dn.items() if d in {a.dn.lower() for a in accounts}}
    assert len(demo) == len(accounts)
    assert all(v.startswith(ARGON2ID_PREFIX) for v in demo.values()), "a demo account's hash is not argon2id"

    database = lab.host.check_output(
        "ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H ldapi:/// -b 'olcDatabase={1}mdb,cn=config' "
        "-s base olcRootPW"
    )
    root_pw = next(line for line in database.splitlines() if line.startswith("olcRootPW"))
    assert root_pw.startswith("olcRootPW: "), "olcRootPW is base64 in LDIF: not clean text"
    root_value = root_pw.removeprefix("olcRootPW: ").encode()
    root_ok = root_value.startswith(ARGON2ID_PREFIX)  # the hash stays out of a failure report
    assert root_ok, root_value[:len(ARGON2ID_PREFIX)]
    problem = stored_password_problem(root_value)
    assert problem is None, problem


def _assert_clean_hash(lab: Lab, uid: str, dn: str, prefix: bytes) -> None:
    """The entry's stored userPassword has the scheme ``prefix`` and nothing after the hash."""
    stored = _stored_passwords(lab, f"(uid={uid})")[dn.lower()]
    scheme_ok = stored.startswith(prefix)  # the hash stays out of a failure report
    assert scheme_ok, stored[:len(prefix)]
    problem = stored_password_problem(stored)
    assert problem is None, problem


def test_every_password_path_stores_a_clean_hash(lab: Lab, accounts: list[DemoAccount]) -> None:
    """An initial password as `qnprov accounts apply --password-scheme argon2` writes it, then an
    admin's password modify (the rootDN, as `ldappasswd -D cn=admin,...`), then the person's own;
    each value is read back byte for byte."""
    admin_dn = f"cn=admin,{lab.base_dn}"
    admin_password = _read_secret(Path(os.environ["QNPROV_STATE_DIR"]) / "secrets" / "ldap_admin")
    uid = f"pwtest-{os.getpid()}"
    dn = f"uid={uid},{accounts[0].dn.split(',', 1)[1]}"
    initial, by_admin, by_self = (generate_password() for _ in range(3))
    (initial_hash,) = hash_passwords([initial], "argon2")
    _ldap_step(lab, op="add", bind_dn=lab.qnprov_dn, bind_pw=lab.qnprov_password, dn=dn, attributes={
        "objectClass": ["inetOrgPerson", "qnMailAccount"], "uid": [uid], "cn": [uid], "sn": [uid],
        "mail": [f"{uid}@invalid.test"], "qnAccountStatus": ["disabled"], "userPassword": [initial_hash]})
    try:
        _assert_clean_hash(lab, uid, dn, ARGON2ID_PREFIX)

        _ldap_step(lab, op="passwd", bind_dn=admin_dn, bind_pw=admin_password, dn=dn, new=by_admin)
        _assert_clean_hash(lab, uid, dn, ARGON2ID_PREFIX)

        _ldap_step(lab, op="passwd", bind_dn=dn, bind_pw=by_admin, dn=dn, new=by_self)
        _assert_clean_hash(lab, uid, dn, ARGON2ID_PREFIX)

        bound = run_with_secret(lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", dn], by_self)
        assert bound.rc == 0 and bound.stdout.strip() == f"dn:{dn}", bound.stderr
        refused = run_with_secret(lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", dn], by_admin)
        assert refused.rc == 49, refused.stderr
    finally:
        _ldap_step(lab, op="delete", bind_dn=lab.qnprov_dn, bind_pw=lab.qnprov_password, dn=dn)


def test_demo_accounts_are_on_their_distribution_list(lab: Lab, accounts: list[DemoAccount]) -> None:
    account = accounts[0]
    assert account.agency, f"{account.address} has no qnAgencyCode"
    group = lab.host.check_output(
        "slapcat -o ldif-wrap=no -F /etc/ldap/slapd.d -b %s -a %s",
        lab.base_dn,
        f"(cn={account.agency.lower()}-all)",
    )
    assert f"member: {account.dn}" in group
    assert "objectClass: qnMailGroup" in group


def _decode_ldif_value(line: str) -> str:
    _name, _, rest = line.partition(":")
    if rest.startswith(":"):
        return base64.b64decode(rest[1:].strip()).decode("utf-8")
    return rest.strip()
