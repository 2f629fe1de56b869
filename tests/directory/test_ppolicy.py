"""Forced change of the initial password (issue 14) against the test slapd with slapo-ppolicy.

The test slapd loads the overlay and the default policy from the role's own templates
(templates/openldap/ppolicy-overlay.ldif.j2, ppolicy.ldif.j2), so these tests measure what
slapd itself enforces: pwdReset on created and reset accounts, the restricted session,
the length and history rules, and the person's own change clearing pwdReset.
"""

from __future__ import annotations

import base64
import csv
import json
import stat
from pathlib import Path

import pytest
from ldap3 import BASE, MODIFY_REPLACE, Connection, Server
from typer.testing import CliRunner

from qnprov.directory.cli import accounts_app
from qnprov.directory.passwords import stored_password_problem
from qnprov_testing import synthetic
from qnprov_testing.slapd import PASSWORD_IN_HISTORY, PASSWORD_MIN_LENGTH, TestSlapd

pytestmark = pytest.mark.slapd
runner = CliRunner()
AGENCIES = synthetic.agencies(2)
SHORT_MESSAGE = "Password fails quality checking policy"
MUST_CHANGE = "(&(objectClass=qnMailAccount)(pwdReset=TRUE))"


def _conn_args(slapd: TestSlapd, password_file: Path) -> list[str]:
    return ["--ldap-url", slapd.url, "--bind-dn", slapd.writer_dn, "--bind-password-file", str(password_file),
            "--base-dn", slapd.base_dn]


def _apply(slapd: TestSlapd, password_file: Path, tmp_path: Path, people: int = 6) -> dict[str, dict[str, str]]:
    """accounts apply through the CLI; returns the hand-over rows by address."""
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES)
    synthetic.write_roster_csv(tmp_path / "roster.csv", synthetic.roster(AGENCIES, people))
    result = runner.invoke(accounts_app, ["apply", *_conn_args(slapd, password_file),
                                          "--primary-domain", "quangninh.test", "--agencies",
                                          str(tmp_path / "agencies.csv"), "--roster", str(tmp_path / "roster.csv"),
                                          "--credentials-dir", str(tmp_path / "creds"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["create"] == people
    rows: dict[str, dict[str, str]] = {}
    for path in (tmp_path / "creds").iterdir():
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                rows[row["address"]] = {**row, "agency": path.stem}
    return rows


def _bind(slapd: TestSlapd, dn: str, password: str) -> Connection:
    connection = Connection(Server("127.0.0.1", port=slapd.port), user=dn, password=password)
    assert connection.bind(), f"bind as {dn}: {connection.result}"
    return connection


def _binds(slapd: TestSlapd, dn: str, password: str) -> bool:
    connection = Connection(Server("127.0.0.1", port=slapd.port), user=dn, password=password)
    try:
        return bool(connection.bind())
    finally:
        connection.unbind()


def _dn(slapd: TestSlapd, address: str) -> str:
    out = slapd.ldap_tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", slapd.base_dn,
                          f"(mail={address})", "1.1").stdout
    (dn,) = [line[4:] for line in out.splitlines() if line.startswith("dn: ")]
    return dn


def _pwd_reset(slapd: TestSlapd, dn: str) -> str | None:
    out = slapd.ldap_tool("ldapsearch", "-LLL", "-b", dn, "-s", "base", "(objectClass=*)", "pwdReset").stdout
    values = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("pwdReset: ")]
    return values[0] if values else None


def _self_change(slapd: TestSlapd, dn: str, old: str, new: str) -> dict:
    """The person's own change: password modify (RFC 3062) bound as themselves, with the old password."""
    connection = _bind(slapd, dn, old)
    try:
        connection.extend.standard.modify_password(dn, old, new)
        return dict(connection.result)
    finally:
        connection.unbind()


def test_apply_marks_new_accounts_must_change_and_only_them(slapd: TestSlapd, password_file: Path,
                                                            tmp_path: Path) -> None:
    rows = _apply(slapd, password_file, tmp_path)
    assert slapd.count_entries(search_filter=MUST_CHANGE) == len(rows) == 6
    for cn in ("postfix", "dovecot", "qnprov"):  # the service accounts are never marked
        assert _pwd_reset(slapd, slapd.service_dn(cn)) is None
    # Dovecot's lookup account finds the mark with the production ACLs: that is its passdb filter.
    dovecot = _bind(slapd, slapd.service_dn("dovecot"), slapd.service_passwords["dovecot"])
    try:
        dovecot.search(slapd.base_dn, MUST_CHANGE, attributes=["mail", "pwdReset"])
        found = {str(entry.mail) for entry in dovecot.entries}
        assert found == set(rows)
        assert {str(entry.pwdReset) for entry in dovecot.entries} == {"True"}
    finally:
        dovecot.unbind()


def test_initial_password_binds_but_the_session_may_only_change_it(slapd: TestSlapd, password_file: Path,
                                                                   tmp_path: Path) -> None:
    address, row = next(iter(_apply(slapd, password_file, tmp_path).items()))
    connection = _bind(slapd, _dn(slapd, address), row["initial_password"])  # a plain bind succeeds ...
    try:
        connection.search(_dn(slapd, address), "(objectClass=*)", search_scope=BASE, attributes=["mail"])
        # ... but slapo-ppolicy limits the session (pwdMustChange TRUE with pwdReset TRUE).
        assert connection.result["description"] == "insufficientAccessRights"
        assert "restricted to bind/unbind/abandon/StartTLS/modify password" in connection.result["message"]
    finally:
        connection.unbind()


def test_directory_refuses_short_and_reused_passwords_and_self_change_clears_the_mark(
        slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    address, row = next(iter(_apply(slapd, password_file, tmp_path).items()))
    dn, initial = _dn(slapd, address), row["initial_password"]

    short = _self_change(slapd, dn, initial, "x" * (PASSWORD_MIN_LENGTH - 1))
    assert (short["description"], short["message"]) == ("constraintViolation", SHORT_MESSAGE)
    same = _self_change(slapd, dn, initial, initial)  # keeping the initial password
    assert (same["description"], same["message"]) == (
        "constraintViolation", "Password is not being changed from existing value")
    assert _pwd_reset(slapd, dn) == "TRUE" and _binds(slapd, dn, initial)

    first = "Hạ Long bay 2026 first"
    done = _self_change(slapd, dn, initial, first)
    assert done["description"] == "success", done
    assert _pwd_reset(slapd, dn) is None  # ppolicy deleted the mark
    assert _binds(slapd, dn, first) and not _binds(slapd, dn, initial)
    connection = _bind(slapd, dn, first)  # the session is no longer restricted
    try:
        assert connection.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["mail"])
        assert str(connection.entries[0].mail) == address
    finally:
        connection.unbind()

    second = "Hạ Long bay 2026 second"
    assert _self_change(slapd, dn, first, second)["description"] == "success"
    back_to_initial = _self_change(slapd, dn, second, initial)  # in the history now
    assert (back_to_initial["description"], back_to_initial["message"]) == (
        "constraintViolation", "Password is in history of old passwords")
    assert _self_change(slapd, dn, second, first)["message"] == "Password is in history of old passwords"
    assert PASSWORD_IN_HISTORY >= 2


def test_reset_password_issues_a_new_initial_password_and_marks_again(slapd: TestSlapd, password_file: Path,
                                                                     tmp_path: Path) -> None:
    address, row = next(iter(_apply(slapd, password_file, tmp_path).items()))
    dn = _dn(slapd, address)
    chosen = "Móng Cái border 2026"
    assert _self_change(slapd, dn, row["initial_password"], chosen)["description"] == "success"
    assert _pwd_reset(slapd, dn) is None

    creds = tmp_path / "reset-creds"
    result = runner.invoke(accounts_app, ["reset-password", address, *_conn_args(slapd, password_file),
                                          "--credentials-dir", str(creds), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    hand_over = creds / f"{row['agency']}.csv"
    assert doc == {"address": address, "employee_id": row["employee_id"], "agency": row["agency"], "dn": dn,
                   "must_change": True, "applied": True, "credentials_file": str(hand_over)}
    assert "initial_password" not in result.stdout and chosen not in result.output
    assert stat.S_IMODE(hand_over.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    with hand_over.open(encoding="utf-8") as handle:
        (new_row,) = list(csv.DictReader(handle))
    assert (new_row["employee_id"], new_row["address"]) == (row["employee_id"], address)
    new_password = new_row["initial_password"]
    assert new_password not in (row["initial_password"], chosen) and len(new_password) == 21

    assert _pwd_reset(slapd, dn) == "TRUE"
    assert _binds(slapd, dn, new_password) and not _binds(slapd, dn, chosen)
    # The person must change it again; the self change clears the mark again.
    assert _self_change(slapd, dn, new_password, "Cô Tô island 2026 again")["description"] == "success"
    assert _pwd_reset(slapd, dn) is None


def test_reset_password_check_writes_nothing(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    address, row = next(iter(_apply(slapd, password_file, tmp_path).items()))
    dn = _dn(slapd, address)
    assert _self_change(slapd, dn, row["initial_password"], "Yên Tử pagoda 2026")["description"] == "success"
    creds = tmp_path / "check-creds"
    result = runner.invoke(accounts_app, ["reset-password", address.upper(), *_conn_args(slapd, password_file),
                                          "--credentials-dir", str(creds), "--check", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["address"], doc["applied"], doc["must_change"]) == (address, False, False)
    assert not creds.exists()
    assert _pwd_reset(slapd, dn) is None and _binds(slapd, dn, "Yên Tử pagoda 2026")

    human = runner.invoke(accounts_app, ["reset-password", address, *_conn_args(slapd, password_file),
                                         "--credentials-dir", str(creds), "--check"])
    assert human.exit_code == 0 and f"Would issue a new initial password for {address}" in human.stdout
    assert not creds.exists()


def test_reset_password_of_an_unknown_address_fails_cleanly(slapd: TestSlapd, password_file: Path,
                                                            tmp_path: Path) -> None:
    _apply(slapd, password_file, tmp_path, people=2)
    creds = tmp_path / "creds-unknown"
    result = runner.invoke(accounts_app, ["reset-password", "nobody*)(mail=*@quangninh.test",
                                          *_conn_args(slapd, password_file), "--credentials-dir", str(creds)])
    assert result.exit_code == 2
    assert "no account has the address 'nobody*)(mail=*@quangninh.test'" in result.output
    assert "Traceback" not in result.output and not creds.exists()


def test_a_plain_modify_by_the_person_is_checked_and_hashed_not_stored_as_sent(
        slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    """Some password plugins replace userPassword with a plain modify: the policy still applies,
    and olcPPolicyHashCleartext hashes the value (olcPasswordHash) instead of storing cleartext."""
    address, row = next(iter(_apply(slapd, password_file, tmp_path).items()))
    dn = _dn(slapd, address)
    connection = _bind(slapd, dn, row["initial_password"])
    try:
        connection.modify(dn, {"userPassword": [(MODIFY_REPLACE, ["short-1"])]})
        assert (connection.result["description"], connection.result["message"]) == (
            "constraintViolation", SHORT_MESSAGE)
        chosen = "Vân Đồn airport 2026"
        connection.modify(dn, {"userPassword": [(MODIFY_REPLACE, [chosen])]})
        assert connection.result["description"] == "success", connection.result
    finally:
        connection.unbind()
    stored = slapd.ldap_tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", dn, "-s", "base",
                             "(objectClass=*)", "userPassword").stdout
    (value,) = [base64.b64decode(line.split(":: ", 1)[1]) for line in stored.splitlines()
                if line.startswith("userPassword:: ")]
    assert value.startswith(b"{ARGON2}$argon2id$") and chosen.encode() not in value  # olcPasswordHash
    assert stored_password_problem(value) is None
    assert _pwd_reset(slapd, dn) is None and _binds(slapd, dn, chosen)


def test_a_password_set_by_someone_else_marks_a_person_but_never_a_role_managed_account(
        slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    """slapd 2.5 marks pwdReset TRUE on any password set by another identity (pwdMustChange TRUE).
    The service accounts are under cn=role-managed (pwdMustChange FALSE): a rotated service
    password must never restrict the service's own session."""
    address, row = next(iter(_apply(slapd, password_file, tmp_path).items()))
    person = _dn(slapd, address)
    assert _self_change(slapd, person, row["initial_password"], "Tuần Châu harbour 2026")["description"] == "success"
    assert _pwd_reset(slapd, person) is None
    for dn, new in ((person, "Set by the admin 2026"), (slapd.service_dn("dovecot"), "rotated-service-password")):
        slapd.ldap_tool("ldappasswd", "-s", new, dn)  # the root DN sets it (RFC 3062)
    assert _pwd_reset(slapd, person) == "TRUE"
    assert _pwd_reset(slapd, slapd.service_dn("dovecot")) is None
    dovecot = _bind(slapd, slapd.service_dn("dovecot"), "rotated-service-password")
    try:  # the service's session is not restricted: its lookups still work
        assert dovecot.search(slapd.base_dn, f"(mail={address})", attributes=["mail"])
    finally:
        dovecot.unbind()
    out = slapd.ldap_tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", f"ou=services,{slapd.base_dn}",
                          "(objectClass=*)", "pwdPolicySubentry").stdout
    assert out.count(f"pwdPolicySubentry: cn=role-managed,ou=policies,{slapd.base_dn}") == 3
