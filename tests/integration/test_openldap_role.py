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

pytestmark = pytest.mark.lab

CA_FILE = "/etc/qnprov/tls/ca.pem"
STARTTLS_URI = "ldap://127.0.0.1"
LDAPS_URI = "ldaps://127.0.0.1"
# Make the client tools verify the server certificate against the lab CA only.
TLS_ENV = {"LDAPTLS_CACERT": CA_FILE, "LDAPTLS_REQCERT": "demand"}


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
    assert _decode_ldif_value(root_pw_line).startswith("{ARGON2}")


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


def test_stored_passwords_are_argon2_hashes(lab: Lab, accounts: list[DemoAccount]) -> None:
    dump = lab.host.check_output(
        "slapcat -o ldif-wrap=no -F /etc/ldap/slapd.d -b %s -a %s", lab.base_dn, "(userPassword=*)"
    )
    by_dn: dict[str, str] = {}
    dn = ""
    for line in dump.splitlines():
        if line.startswith("dn:"):
            dn = _decode_ldif_value(line).lower()
        elif line.startswith("userPassword"):
            by_dn[dn] = _decode_ldif_value(line)
    # Three service accounts plus every demo account.
    assert len(by_dn) >= 3 + len(accounts)
    # The directory may also hold accounts provisioned by `qnprov accounts`
    # ({SSHA} for random initial passwords); no scheme but these two, ever.
    assert all(value.startswith(("{ARGON2}", "{SSHA}")) for value in by_dn.values()), (
        "a userPassword is neither {ARGON2} nor {SSHA}")
    role_managed = {d: v for d, v in by_dn.items() if ",ou=services," in d or d.startswith("uid=lab")}
    assert len(role_managed) >= 3 + len(accounts)
    assert all(v.startswith("{ARGON2}") for v in role_managed.values()), (
        "a password the role set is not an {ARGON2} hash (openldap_password_hash)")


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
