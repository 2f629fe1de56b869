"""``qnprov accounts reset-password``: a new initial password, and "must change password" again (issue 14)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from ldap3 import MODIFY_REPLACE, Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from qnprov.cliout import out, print_json
from qnprov.directory import ldapio
from qnprov.directory.cliopts import (
    BaseDnOpt,
    BindDnOpt,
    CaCertOpt,
    InventoryOpt,
    JsonOpt,
    LdapUrlOpt,
    PasswordFileOpt,
    _connection_options,
    _user_errors,
)
from qnprov.directory.ldapio import _ACCOUNT_DN, ACCOUNTS_FILTER, PWD_RESET
from qnprov.directory.passwords import CredentialsWriter, PasswordScheme, generate_password, hash_passwords
from qnprov.directory.settings import resolve_settings
from qnprov.errors import ConfigError, ExternalError, QnprovError

# --- password reset (issue 14) ------------------------------------------------------


@dataclass(frozen=True)
class AccountRef:
    """One account found by its address, for ``qnprov accounts reset-password``."""

    dn: str
    employee_id: str
    agency: str
    mail: str
    status: str
    must_change: bool


def find_account(connection: Connection, base_dn: str, address: str) -> AccountRef:
    """The account whose primary address or alias is ``address`` (escaped into the filter)."""
    value = escape_filter_chars(address.strip().lower())
    search_filter = f"(&{ACCOUNTS_FILTER}(|(mail={value})(mailLocalAddress={value})))"
    try:
        connection.search(base_dn, search_filter, attributes=["uid", "mail", "qnAccountStatus", PWD_RESET])
    except LDAPException as exc:
        raise ExternalError(f"looking up {address!r}: {exc}") from exc
    entries = [e for e in connection.response or [] if e.get("type") == "searchResEntry"]
    if not entries:
        raise ConfigError(f"no account has the address {address!r}")
    if len(entries) > 1:
        raise ExternalError(f"{len(entries)} accounts carry the address {address!r}; fix the directory first")
    entry = entries[0]
    match = _ACCOUNT_DN.match(entry["dn"])
    if match is None:
        raise ExternalError(f"{entry['dn']} is not an account under ou=people of an agency")
    attrs = {k.lower(): v for k, v in entry["attributes"].items()}

    def first(name: str) -> str:
        value = attrs.get(name.lower())
        if isinstance(value, list):
            return str(value[0]) if value else ""
        return "" if value is None else str(value)

    return AccountRef(dn=entry["dn"], employee_id=first("uid"), agency=match.group(2), mail=first("mail"),
                      status=first("qnAccountStatus") or "active",
                      must_change=first(PWD_RESET).upper() == "TRUE")


def reset_password(connection: Connection, account: AccountRef,
                   scheme: PasswordScheme = "ssha") -> str:
    """Give ``account`` a new random initial password and set pwdReset TRUE; returns the password.

    One modify: the new hash and pwdReset together. Naming pwdReset in the same
    modify is what keeps slapo-ppolicy from deleting it, as it does on every other
    password change.
    """
    password = generate_password()
    (hashed,) = hash_passwords([password], scheme)
    try:
        connection.modify(account.dn, {"userPassword": [(MODIFY_REPLACE, [hashed])],
                                       PWD_RESET: [(MODIFY_REPLACE, ["TRUE"])]})
    except LDAPException as exc:
        raise ExternalError(f"resetting the password of {account.mail}: {exc}") from exc
    return password


def accounts_reset_password(
    address: Annotated[str, typer.Argument(help="The account's address (primary or alias).")],
    credentials_dir: Annotated[Path, typer.Option(
        "--credentials-dir", help="Append the new initial password to DIR/<AGENCY>.csv (0600), "
        "the hand-over file accounts apply writes.")],
    hash_scheme: Annotated[str, typer.Option(
        "--password-scheme", help="ssha (default) or argon2, as for accounts apply.")] = "ssha",
    check: Annotated[bool, typer.Option("--check", help="Find the account and report; write nothing.")] = False,
    inventory: InventoryOpt = None, ldap_url: LdapUrlOpt = None, bind_dn: BindDnOpt = None,
    bind_password_file: PasswordFileOpt = None, ca_cert: CaCertOpt = None, base_dn: BaseDnOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a new initial password and set "must change password" (pwdReset) again."""
    with _user_errors():
        if hash_scheme not in ("ssha", "argon2"):
            raise ConfigError("--password-scheme must be ssha or argon2")
        settings = resolve_settings(_connection_options(inventory, ldap_url, bind_dn, bind_password_file,
                                                        ca_cert, base_dn, None))
        connection = ldapio.connect(settings)
        try:
            account = find_account(connection, settings.base_dn, address)
            if account.status != "active":
                raise ConfigError(f"{account.mail} is {account.status}; enable it before resetting its password")
            credentials_file = credentials_dir / f"{account.agency}.csv"
            if not check:
                # The file is opened first, so a directory that cannot be written stops the
                # reset before the directory changes and the new password would be lost.
                writer = CredentialsWriter(credentials_dir)
                try:
                    writer.open(account.agency)
                    password = reset_password(connection, account, hash_scheme)  # type: ignore[arg-type]
                    writer.add(account.agency, account.employee_id, account.mail, password)
                    del password
                finally:
                    writer.close()
                account = find_account(connection, settings.base_dn, account.mail)
        finally:
            connection.unbind()
        doc = {"address": account.mail, "employee_id": account.employee_id, "agency": account.agency,
               "dn": account.dn, "must_change": account.must_change, "applied": not check,
               "credentials_file": str(credentials_file)}
        if as_json:
            print_json(doc, indent=None)
            return
        if check:
            out.print(f"Would issue a new initial password for {account.mail} ({account.employee_id}), "
                      f"set \"must change password\" and append it to {credentials_file} (mode 0600).")
            return
        out.print(f"New initial password for {account.mail} ({account.employee_id}) in {credentials_file} "
                  f"(mode 0600); must change password: {'yes' if account.must_change else 'NO'}.")
        if not account.must_change:
            raise QnprovError(f"pwdReset is not TRUE on {account.dn} after the reset; is slapo-ppolicy loaded?")
