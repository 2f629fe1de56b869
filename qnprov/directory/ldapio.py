"""The ldap3 edge: connect, read the directory's state once, apply a plan pipelined."""

from __future__ import annotations

import ipaddress
import re
import ssl
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ldap3 import NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPSizeLimitExceededResult
from ldap3.utils.dn import escape_rdn

from qnprov.directory import ber
from qnprov.directory.models import (
    Agency,
    AttributeChange,
    DirectoryAccount,
    DirectoryGroup,
    DirectoryState,
    Entry,
    Plan,
    account_rdn,
)
from qnprov.directory.passwords import CredentialsWriter, PasswordScheme, generate_password, hash_passwords
from qnprov.directory.wire import LdapPipeline, Operation
from qnprov.errors import ConfigError, ExternalError

DEFAULT_WINDOW = 128
# slapo-ppolicy's operational attribute: TRUE until the person changes the password
# an administrator (qnprov) set. The overlay deletes it on the person's own change.
PWD_RESET = "pwdReset"  # noqa: S105 - an attribute name


@dataclass(frozen=True)
class LdapSettings:
    url: str
    base_dn: str
    bind_dn: str
    bind_password: str = field(repr=False)
    ca_cert: Path | None = None
    domain: str = ""
    # Name the server certificate carries when the URL names something else
    # (the lab publishes ldaps on 127.0.0.1; its certificate is for mail1.quangninh.test).
    tls_server_name: str | None = None
    # Further directory providers, in preference order, tried when the one before
    # cannot be reached (multi-provider replication, issue 10).
    fallback_urls: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.fallback_urls)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Unreachable(Exception):
    """The provider at one URL could not be reached (connection refused, timeout, TLS failure)."""


def connect(settings: LdapSettings) -> Connection:
    """A bound ldap3 connection with ``raise_exceptions=True``, to the first provider that answers.

    ldaps:// verifies the server against ``ca_cert`` (or the system store); plain
    ldap:// upgrades with StartTLS, and is accepted without TLS only on loopback.
    The URLs are tried in order (``settings.urls``); a provider that cannot be reached
    is skipped, but a refused bind is an answer and is reported at once, since every
    provider holds the same replicated accounts.
    """
    unreachable: list[str] = []
    for url in settings.urls:
        try:
            return _connect_one(settings, url)
        except _Unreachable as exc:
            unreachable.append(f"{url}: {exc}")
    if len(settings.urls) == 1:
        raise ExternalError(f"cannot bind to {settings.url} as {settings.bind_dn}: {unreachable[0].split(': ', 1)[1]}")
    raise ExternalError(f"cannot bind as {settings.bind_dn}: no directory provider answered ({'; '.join(unreachable)})")


def _connect_one(settings: LdapSettings, url: str) -> Connection:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("ldap", "ldaps") or not parsed.hostname:
        raise ConfigError(f"LDAP URL {url!r}: use ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
    tls = Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
              ca_certs_file=str(settings.ca_cert) if settings.ca_cert else None,
              valid_names=[settings.tls_server_name] if settings.tls_server_name else None)
    use_ssl = parsed.scheme == "ldaps"
    server = Server(parsed.hostname, port=parsed.port or (636 if use_ssl else 389), use_ssl=use_ssl,
                    tls=tls, get_info=NONE, connect_timeout=10)
    start_tls = not use_ssl and (settings.ca_cert is not None or not _is_loopback(parsed.hostname))
    connection = Connection(server, user=settings.bind_dn, password=settings.bind_password,
                            raise_exceptions=True, receive_timeout=120, read_only=False)
    try:
        connection.open()
        if start_tls:
            connection.start_tls()
    except LDAPCommunicationError as exc:
        raise _Unreachable(str(exc)) from exc
    except LDAPException as exc:
        raise ExternalError(f"cannot bind to {url} as {settings.bind_dn}: {exc}") from exc
    try:
        connection.bind()
    except LDAPException as exc:
        # One line, naming the server and the identity; never the password.
        raise ExternalError(f"cannot bind to {url} as {settings.bind_dn}: {exc}") from exc
    return connection


# --- reading ----------------------------------------------------------------------

_ACCOUNT_DN = re.compile(r"^uid=((?:[^,\\]|\\.)+),ou=people,ou=((?:[^,\\]|\\.)+),ou=agencies,", re.IGNORECASE)
_GROUP_ALL_DN = re.compile(r"^cn=[^,]+-all,ou=groups,ou=((?:[^,\\]|\\.)+),ou=agencies,", re.IGNORECASE)
ACCOUNT_ATTRIBUTES = ("uid", "cn", "sn", "givenName", "title", "mail", "mailLocalAddress", "qnAccountStatus",
                      "qnDisabledAt", "qnMailForward", "qnAgencyCode", "employeeNumber", "qnMailHost")
OTHER_ATTRIBUTES = ("objectClass", "mail", "mailLocalAddress", "member", "description", "qnAgencyCode",
                    "qnParentAgency", "qnMailDomain", "qnDefaultQuota")


def _one(attrs: dict[str, list[str]], name: str) -> str:
    values = attrs.get(name)
    return values[0] if values else ""


def state_from_entries(base_dn: str, accounts: Iterable[ber.SearchEntry],
                       others: Iterable[ber.SearchEntry]) -> DirectoryState:
    """Classify the two reads into agencies, accounts, lists and taken addresses.

    ``accounts`` are qnMailAccount entries (read without objectClass: a fifth of the
    values of a 20,000-account read); ``others`` carry objectClass.
    """
    state = DirectoryState(base_dn=base_dn)
    taken = state.taken_addresses
    accounts_by_code: list[tuple[str, ber.SearchEntry]] = []
    groups: list[tuple[str, ber.SearchEntry]] = []
    for entry in accounts:
        attrs = entry.attributes  # names arrive lower-cased
        for address in attrs.get("mail", ()):
            taken.add(address.lower())
        for address in attrs.get("maillocaladdress", ()):
            taken.add(address.lower())
        match = _ACCOUNT_DN.match(entry.dn)
        if match:
            accounts_by_code.append((match.group(2), entry))
    for entry in others:
        attrs = entry.attributes
        classes = {c.lower() for c in attrs.get("objectclass", [])}
        for address in (*attrs.get("mail", []), *attrs.get("maillocaladdress", [])):
            taken.add(address.lower())
        if "qnagency" in classes:
            code = _one(attrs, "qnagencycode")
            quota = _one(attrs, "qndefaultquota")
            state.agencies[code] = Agency(code=code, name=_one(attrs, "description"),
                                          parent=_one(attrs, "qnparentagency") or None,
                                          domain=_one(attrs, "qnmaildomain") or None,
                                          default_quota=int(quota) if quota.isdigit() else None)
        elif "qnmailgroup" in classes:
            match = _GROUP_ALL_DN.match(entry.dn)
            if match:
                groups.append((match.group(1), entry))
        state.present_dns.add(entry.dn.lower())
    # The OU name decides which agency an entry belongs to; compare codes case-insensitively.
    codes = {code.lower(): code for code in state.agencies}
    for ou, entry in accounts_by_code:
        attrs = entry.attributes
        get = attrs.get
        eid = _one(attrs, "uid")
        account = DirectoryAccount(
            dn=entry.dn, employee_id=eid, agency=codes.get(ou.lower(), ou), cn=_one(attrs, "cn"),
            sn=_one(attrs, "sn"), given_name=_one(attrs, "givenname"), title=_one(attrs, "title"),
            mail=_one(attrs, "mail"), aliases=tuple(get("maillocaladdress", ())),
            status=_one(attrs, "qnaccountstatus") or "active", disabled_at=_one(attrs, "qndisabledat") or None,
            forwards=tuple(sorted(get("qnmailforward", ()))), agency_code=_one(attrs, "qnagencycode"),
            employee_number=_one(attrs, "employeenumber"), mail_host=_one(attrs, "qnmailhost").lower())
        if eid in state.accounts:
            state.problems.append(f"employee_id {eid!r} has two entries: {state.accounts[eid].dn} and {entry.dn}")
            continue
        state.accounts[eid] = account
    for ou, entry in groups:
        code = codes.get(ou.lower(), ou)
        state.groups[code] = DirectoryGroup(dn=entry.dn, agency=code, mail=_one(entry.attributes, "mail") or None,
                                            members=frozenset(entry.attributes.get("member", [])))
    return state


ACCOUNTS_FILTER = "(objectClass=qnMailAccount)"
# Addresses live on accounts and lists only (docs/design.md); every branch here is on the
# objectClass equality index, so slapd does not scan the whole database for it.
OTHERS_FILTER = "(|(objectClass=qnMailGroup)(objectClass=qnAgency)(objectClass=organizationalUnit))"


def read_state(connection: Connection, base_dn: str, page_size: int = 2000) -> DirectoryState:
    """Read everything the planner needs: two paged searches over the whole DIT."""
    pipeline = LdapPipeline(connection)
    try:
        accounts = list(pipeline.paged_search(base_dn, ACCOUNTS_FILTER, ACCOUNT_ATTRIBUTES, page_size))
        others = list(pipeline.paged_search(base_dn, OTHERS_FILTER, OTHER_ATTRIBUTES, page_size))
    except LDAPSizeLimitExceededResult as exc:
        raise ExternalError(
            f"slapd's size limit cut the read of {base_dn} short; the provisioning account needs "
            f'olcLimits: dn.exact="{connection.user}" size=unlimited time=unlimited on the database') from exc
    except LDAPException as exc:
        raise ExternalError(f"reading {base_dn}: {exc}") from exc
    return state_from_entries(base_dn, accounts, others)


# --- writing ----------------------------------------------------------------------


def modifications(changes: Iterable[AttributeChange]) -> list[tuple[int, str, tuple[str, ...]]]:
    """Replace each changed attribute with its new values (no values deletes it)."""
    return [(ber.MOD_REPLACE, change.attribute, change.new) for change in changes]


@dataclass
class ApplyResult:
    writes: int = 0
    created: int = 0
    credentials_written: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


ProgressCallback = Callable[[Operation], None]


def apply_plan(connection: Connection, plan: Plan, *, window: int = DEFAULT_WINDOW,
               password_scheme: PasswordScheme = "ssha",  # noqa: S107 - a scheme name
               credentials: CredentialsWriter | None = None,
               on_done: ProgressCallback | None = None) -> ApplyResult:
    """Write ``plan``; stops at the first failed operation (after collecting those in flight).

    Order: agency containers, moves, creates, attribute changes, then the lists, so
    every DN a later step names already exists. Re-planning after an interruption
    finds what is still missing and completes it without duplicates: entries are
    created at deterministic DNs (``uid=<employee_id>``) and addresses are
    re-derived from what the directory holds.
    """
    result = ApplyResult()

    def done(operation: Operation) -> None:
        result.writes += 1
        result.by_kind[operation.kind] = result.by_kind.get(operation.kind, 0) + 1
        if operation.kind == "add" and operation.context is not None:
            agency, eid, mail, password = operation.context
            result.created += 1
            if credentials is not None:
                credentials.add(agency, eid, mail, password)
                result.credentials_written += 1
        if on_done is not None:
            on_done(operation)

    pipeline = LdapPipeline(connection, window=window, on_done=done)
    try:
        # slapd runs pipelined requests concurrently, so a parent must be acknowledged
        # before its children are sent: one flushed wave per DIT depth.
        waves: dict[int, list[Entry]] = {}
        for agency_create in plan.agency_creates:
            for entry in agency_create.entries:
                waves.setdefault(entry[0].count(","), []).append(entry)
        for depth in sorted(waves):
            for dn, attributes in waves[depth]:
                pipeline.add(dn, attributes)
            pipeline.flush()

        for agency_update in plan.agency_updates:
            pipeline.modify(agency_update.dn, modifications(agency_update.changes))
        for update in plan.updates:
            if update.kind == "move" and update.new_dn:
                rdn = account_rdn(update.employee_id)  # escaped: never split a DN on a comma
                if not update.new_dn.startswith(rdn + ","):
                    raise ExternalError(f"move target {update.new_dn!r} does not start with {rdn!r}")
                pipeline.move(update.dn, rdn, update.new_dn[len(rdn) + 1:])
        pipeline.flush()

        passwords = [generate_password() for _ in plan.creates]
        hashes = hash_passwords(passwords, password_scheme)
        for create, password, hashed in zip(plan.creates, passwords, hashes, strict=True):
            attributes = dict(create.attributes)
            attributes["userPassword"] = (hashed,)
            # "Must change password" (slapo-ppolicy, pwdMustChange): the mail services refuse
            # the account until the person sets a password of their own (docs/directory.md).
            attributes[PWD_RESET] = ("TRUE",)
            pipeline.add(create.dn, attributes, context=(create.agency, create.employee_id, create.mail, password))
        del passwords

        for update in plan.updates:
            if update.changes:
                pipeline.modify(update.new_dn or update.dn, modifications(update.changes))
        pipeline.flush()

        for group in plan.group_updates:
            changes: list[tuple[int, str, tuple[str, ...]]] = []
            if group.add:
                changes.append((ber.MOD_ADD, "member", group.add))
            if group.remove:
                changes.append((ber.MOD_DELETE, "member", group.remove))
            pipeline.modify(group.dn, changes)
        pipeline.flush()
    except LDAPException as exc:
        raise ExternalError(f"apply stopped after {result.writes} writes: {exc}") from exc
    finally:
        if credentials is not None:
            credentials.flush()
    return result


def write_entries(connection: Connection, entries: Iterable[tuple[str, dict[str, tuple[str, ...]]]],
                  *, skip_present: set[str] | None = None) -> int:
    """Add entries in order (parents first); entries whose DN is in ``skip_present`` are skipped."""
    pipeline = LdapPipeline(connection, window=1)
    count = 0
    try:
        for dn, attributes in entries:
            if skip_present and dn.lower() in skip_present:
                continue
            pipeline.add(dn, attributes)
            pipeline.flush()
            count += 1
    except LDAPException as exc:
        raise ExternalError(f"writing stopped after {count} entries: {exc}") from exc
    return count


def delete_entries(connection: Connection, dns: Iterable[str]) -> int:
    pipeline = LdapPipeline(connection)
    count = 0
    try:
        for dn in dns:
            pipeline.delete(dn)
            count += 1
        pipeline.flush()
    except LDAPException as exc:
        raise ExternalError(f"deleting stopped: {exc}") from exc
    return count


def domain_entry(base_dn: str, domain: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    return (f"associatedDomain={escape_rdn(domain)},ou=domains,{base_dn}",
            {"objectClass": ("top", "organizationalUnit", "domainRelatedObject"), "ou": (domain,),
             "associatedDomain": (domain,)})


