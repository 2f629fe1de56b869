"""The openldap role's promises, checked on a converged host (lab or molecule).

Run against a container that the common and openldap roles converged:

    QNPROV_TEST_HOST=<container name> \\
    QNPROV_TEST_VARS=<YAML file with the variables the play used> \\
    pytest -m lab tests/integration/test_openldap_role.py

QNPROV_TEST_VARS names a YAML mapping holding at least ``qnprov_ldap_base_dn``,
``qnprov_ldap_postfix_password``, ``qnprov_ldap_qnprov_password`` and
``openldap_accounts`` (one account or more), i.e. the lab's inventory overlay.
Without either variable every test here fails: a selected test must never pass
by not running.

Checks that need a password run through ``podman exec -i`` with the password
on stdin (``-y /dev/stdin``), so no secret appears on a command line, in the
container's process list, or in a failure report.
"""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

pytestmark = pytest.mark.lab

CA_FILE = "/etc/qnprov/tls/ca.pem"
STARTTLS_URI = "ldap://127.0.0.1"
LDAPS_URI = "ldaps://127.0.0.1"
# Make the client tools verify the server certificate against the lab CA only.
TLS_ENV = {"LDAPTLS_CACERT": CA_FILE, "LDAPTLS_REQCERT": "demand"}


@dataclass(frozen=True)
class Lab:
    container: str
    host: Any  # testinfra.host.Host
    base_dn: str
    postfix_password: str
    qnprov_password: str
    accounts: list[dict[str, Any]]

    @property
    def postfix_dn(self) -> str:
        return f"cn=postfix,ou=services,{self.base_dn}"

    @property
    def qnprov_dn(self) -> str:
        return f"cn=qnprov,ou=services,{self.base_dn}"

    def account_dn(self, account: dict[str, Any]) -> str:
        return f"uid={account['employee_id']},ou=people,ou={account['agency']},ou=agencies,{self.base_dn}"


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


@pytest.fixture(scope="module")
def lab() -> Lab:
    container = _required_env("QNPROV_TEST_HOST")
    variables = yaml.safe_load(Path(_required_env("QNPROV_TEST_VARS")).read_text(encoding="utf-8"))
    accounts = variables.get("openldap_accounts") or []
    if not accounts:
        raise RuntimeError("QNPROV_TEST_VARS lists no openldap_accounts; the bind tests need one")
    return Lab(
        container=container,
        host=testinfra.get_host(f"podman://{container}"),
        base_dn=variables["qnprov_ldap_base_dn"],
        postfix_password=variables["qnprov_ldap_postfix_password"],
        qnprov_password=variables["qnprov_ldap_qnprov_password"],
        accounts=accounts,
    )


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


@pytest.mark.parametrize("protocol", ["-tls1", "-tls1_1"])
def test_tls_below_1_2_is_refused(lab: Lab, protocol: str) -> None:
    result = lab.host.run(f"openssl s_client -connect 127.0.0.1:636 {protocol} -CAfile {CA_FILE} </dev/null")
    assert "Cipher is (NONE)" in result.stdout or result.rc != 0
    assert "Verify return code: 0 (ok)" not in result.stdout


def test_tls_1_2_with_aead_cipher_and_verified_chain(lab: Lab) -> None:
    result = lab.host.run(f"openssl s_client -connect 127.0.0.1:636 -tls1_2 -CAfile {CA_FILE} </dev/null")
    assert "Verify return code: 0 (ok)" in result.stdout
    cipher_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("Cipher    :"))
    assert "GCM" in cipher_line or "CHACHA20" in cipher_line


def test_cbc_cipher_is_refused(lab: Lab) -> None:
    result = lab.host.run(
        f"openssl s_client -connect 127.0.0.1:636 -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA -CAfile {CA_FILE} </dev/null"
    )
    assert "Verify return code: 0 (ok)" not in result.stdout


def test_postfix_reads_mail_but_never_user_password(lab: Lab) -> None:
    account = lab.accounts[0]
    result = run_with_secret(
        lab,
        [
            "ldapsearch", "-x", "-LLL", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn,
            "-b", lab.base_dn, f"(uid={account['employee_id']})", "mail", "userPassword",
        ],
        lab.postfix_password,
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    assert f"mail: {account['mail']}" in result.stdout
    assert "userPassword" not in result.stdout


def test_postfix_cannot_write(lab: Lab) -> None:
    account_dn = lab.account_dn(lab.accounts[0])
    ldif = f"dn: {account_dn}\nchangetype: modify\nadd: description\ndescription: written by postfix\n"
    result = run_with_secret(
        lab, ["ldapmodify", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.postfix_dn], lab.postfix_password, ldif
    )
    assert result.rc == 50, result.stderr
    assert "Insufficient access" in result.stderr


def test_qnprov_can_write(lab: Lab) -> None:
    account_dn = lab.account_dn(lab.accounts[0])
    marker = f"qnprov write test {os.getpid()}"
    add = f"dn: {account_dn}\nchangetype: modify\nadd: description\ndescription: {marker}\n"
    remove = f"dn: {account_dn}\nchangetype: modify\ndelete: description\ndescription: {marker}\n"
    argv = ["ldapmodify", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.qnprov_dn]
    added = run_with_secret(lab, argv, lab.qnprov_password, add)
    assert added.rc == 0, added.stderr
    removed = run_with_secret(lab, argv, lab.qnprov_password, remove)
    assert removed.rc == 0, removed.stderr


def test_demo_accounts_bind_with_their_passwords(lab: Lab) -> None:
    for account in lab.accounts:
        result = run_with_secret(
            lab, ["ldapwhoami", "-x", "-H", STARTTLS_URI, "-ZZ", "-D", lab.account_dn(account)], account["password"]
        )
        assert result.rc == 0, f"{account['employee_id']}: {result.stderr}"


def test_stored_passwords_are_argon2_hashes(lab: Lab) -> None:
    dump = lab.host.check_output(
        "slapcat -o ldif-wrap=no -F /etc/ldap/slapd.d -b %s -a %s", lab.base_dn, "(userPassword=*)"
    )
    hashes = [_decode_ldif_value(line) for line in dump.splitlines() if line.startswith("userPassword")]
    # Three service accounts plus every demo account.
    assert len(hashes) >= 3 + len(lab.accounts)
    assert all(value.startswith("{ARGON2}") for value in hashes), "a userPassword is not an {ARGON2} hash"


def test_demo_accounts_are_on_their_distribution_list(lab: Lab) -> None:
    account = lab.accounts[0]
    code = account["agency"]
    group = lab.host.check_output(
        "slapcat -o ldif-wrap=no -F /etc/ldap/slapd.d -b %s -a %s",
        lab.base_dn,
        f"(cn={code.lower()}-all)",
    )
    assert f"member: {lab.account_dn(account)}" in group
    assert "objectClass: qnMailGroup" in group


def _decode_ldif_value(line: str) -> str:
    _name, _, rest = line.partition(":")
    if rest.startswith(":"):
        return base64.b64decode(rest[1:].strip()).decode("utf-8")
    return rest.strip()
