"""Provisioning against a real slapd (project schema, ACLs and base DIT) on loopback."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ldap3 import BASE, Connection, Server
from ldap3.core.exceptions import LDAPInvalidCredentialsResult
from ldap3.utils.conv import escape_filter_chars

from qnprov.directory import ldapio
from qnprov.directory.models import Account, Agency
from qnprov.directory.passwords import CredentialsWriter
from qnprov.directory.sync import SyncRequest, make_plan, refusal
from qnprov.directory.wire import Operation
from qnprov.errors import ExternalError
from qnprov_testing import synthetic
from qnprov_testing.slapd import TestSlapd

pytestmark = pytest.mark.slapd

AGENCIES = synthetic.agencies(30)
PEOPLE = 3000


def write_inputs(tmp_path: Path, roster: list[Account], agencies: list[Agency] = AGENCIES) -> SyncRequest:
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", agencies)
    synthetic.write_roster_csv(tmp_path / "roster.csv", roster)
    return SyncRequest(agencies_file=tmp_path / "agencies.csv", roster_file=tmp_path / "roster.csv")


def sync(writer: Connection, settings: ldapio.LdapSettings, request: SyncRequest,
         credentials: CredentialsWriter | None = None) -> ldapio.ApplyResult:
    plan, _ = make_plan(writer, settings, request)
    assert refusal(plan, request) is None
    return ldapio.apply_plan(writer, plan, credentials=credentials)


def accounts_in(slapd: TestSlapd) -> dict[str, dict[str, list[str]]]:
    """uid -> attributes, read as the root DN with the OpenLDAP tools (not with the code under test)."""
    out = slapd.ldap_tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", slapd.base_dn,
                          "(objectClass=qnMailAccount)", "uid", "mail", "qnAccountStatus", "cn",
                          "qnDisabledAt", "title", "entryDN").stdout
    result: dict[str, dict[str, list[str]]] = {}
    for block in out.strip().split("\n\n"):
        attrs: dict[str, list[str]] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name.endswith(":"):  # base64 value
                import base64

                name, value = name[:-1], base64.b64decode(value).decode()
            attrs.setdefault(name, []).append(value)
        if "uid" in attrs:
            assert attrs["uid"][0] not in result, f"duplicate uid {attrs['uid'][0]}"
            result[attrs["uid"][0]] = attrs
    return result


def test_import_a_few_thousand_then_replan_is_empty(slapd: TestSlapd, writer: Connection,
                                                    settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    roster = synthetic.roster(AGENCIES, PEOPLE)
    request = write_inputs(tmp_path, roster)
    result = sync(writer, settings, request)
    assert result.created == PEOPLE

    stored = accounts_in(slapd)
    assert len(stored) == PEOPLE
    mails = [a["mail"][0] for a in stored.values()]
    assert len(set(mails)) == PEOPLE, "addresses must be unique"
    assert all(m.endswith("@quangninh.test") and m.split("@")[0].isascii() for m in mails)
    assert stored["E000000"]["dn"][0] == f"uid=E000000,ou=people,ou=UBND,ou=agencies,{slapd.base_dn}"
    members = slapd.ldap_tool("ldapsearch", "-LLL", "-b", f"ou=agencies,{slapd.base_dn}",
                              "(objectClass=qnMailGroup)", "member").stdout
    assert members.count("member: ") == PEOPLE  # every active account is on its agency's -all list

    again, _ = make_plan(writer, settings, request)
    assert again.is_empty and again.summary(applied=False)["create"] == 0


def test_changed_roster_gives_the_exact_diff(slapd: TestSlapd, writer: Connection,
                                             settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    roster = synthetic.roster(AGENCIES, 300)
    sync(writer, settings, write_inputs(tmp_path, roster))
    before = accounts_in(slapd)

    changed = {p.employee_id: p for p in roster}
    changed["E000001"] = dataclasses.replace(roster[1], full_name="Phạm Thị Hồng Nhung")   # rename
    changed["E000002"] = dataclasses.replace(roster[2], title="Giám đốc Sở")              # title
    changed["E000003"] = dataclasses.replace(roster[3], agency="AG010")                    # transfer
    changed["E000004"] = dataclasses.replace(roster[4], status="left")                    # leaver
    del changed["E000005"]                                                                # gone from HR
    newcomer = Account("E999999", "AG001", roster[0].full_name, "Chuyên viên")           # same name as E000000
    changed[newcomer.employee_id] = newcomer
    request = write_inputs(tmp_path, list(changed.values()))

    plan, _ = make_plan(writer, settings, request)
    assert {k: v for k, v in plan.summary(applied=False).items() if k != "errors"} == {
        "create": 1, "modify": 2, "move": 1, "disable": 2, "enable": 0, "applied": False}
    assert {(u.kind, u.employee_id) for u in plan.updates} == {
        ("modify", "E000001"), ("modify", "E000002"), ("move", "E000003"),
        ("disable", "E000004"), ("disable", "E000005")}
    rename = next(u for u in plan.updates if u.employee_id == "E000001")
    assert {c.attribute for c in rename.changes} == {"cn", "sn", "givenName"}
    ldapio.apply_plan(writer, plan)

    after = accounts_in(slapd)
    assert after["E000001"]["mail"] == before["E000001"]["mail"]          # address survives a rename
    assert after["E000001"]["cn"] == ["Phạm Thị Hồng Nhung"]
    assert after["E000003"]["dn"][0].startswith("uid=E000003,ou=people,ou=AG010,")
    assert after["E000003"]["mail"] == before["E000003"]["mail"]          # and a transfer
    for eid in ("E000004", "E000005"):
        assert after[eid]["qnAccountStatus"] == ["disabled"] and after[eid]["qnDisabledAt"]
    base_local = before["E000000"]["mail"][0].split("@")[0]
    assert after["E999999"]["mail"][0].startswith(base_local) and after["E999999"]["mail"] != before["E000000"]["mail"]
    assert make_plan(writer, settings, request)[0].is_empty

    # The leaver comes back: re-enabled with the same address, nothing created.
    changed["E000004"] = roster[4]
    back, _ = make_plan(writer, settings, write_inputs(tmp_path, list(changed.values())))
    assert [(u.kind, u.employee_id) for u in back.updates] == [("enable", "E000004")] and not back.creates


def test_bad_roster_is_refused_and_nothing_is_written(slapd: TestSlapd, writer: Connection,
                                                      settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    entries_before = slapd.count_entries()
    (tmp_path / "roster.csv").write_text(
        "employee_id,agency,full_name,title,status\nE1,UBND,Nguyễn Văn An,,\nE2,NOWHERE,Trần Bình,,\n",
        encoding="utf-8")
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES[:1])
    request = SyncRequest(agencies_file=tmp_path / "agencies.csv", roster_file=tmp_path / "roster.csv")
    plan, _ = make_plan(writer, settings, request)
    problem = refusal(plan, request)
    assert problem is not None and problem.exit_code == 2
    assert problem.errors == [{"line": 3, "field": "agency", "reason": "unknown agency 'NOWHERE'"}]
    assert slapd.count_entries() == entries_before


class Interrupted(Exception):
    pass


def settled_accounts(slapd: TestSlapd) -> dict[str, dict[str, list[str]]]:
    """The accounts once slapd has finished the adds it had already received: operations in
    flight when a client goes away still complete, so the count can grow for a moment after."""
    deadline = time.monotonic() + 15
    previous = accounts_in(slapd)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = accounts_in(slapd)
        if current.keys() == previous.keys():
            return current
        previous = current
    raise AssertionError("slapd was still adding accounts 15 s after the client went away")


@pytest.mark.parametrize("how", ["exception", "dropped-connection"])
def test_interrupted_apply_resumes_without_duplicates(slapd: TestSlapd, settings: ldapio.LdapSettings,
                                                      tmp_path: Path, how: str) -> None:
    roster = synthetic.roster(AGENCIES, 1500)
    # Same names in the same agency: collisions whose suffixes must not be re-issued on resume.
    roster += [Account(f"X{n:03d}", "AG001", "Nguyễn Văn An") for n in range(20)]
    request = write_inputs(tmp_path, roster)
    credentials_dir = tmp_path / "creds"
    first = ldapio.connect(settings)

    def stop_after(limit: int) -> Callable[[Operation], None]:  # like ^C, or the network going away
        seen = 0

        def hook(_operation: Operation) -> None:
            nonlocal seen
            seen += 1
            if seen == limit:
                if how == "exception":
                    raise Interrupted
                first.socket.shutdown(socket.SHUT_RDWR)

        return hook

    plan, _ = make_plan(first, settings, request)
    credentials = CredentialsWriter(credentials_dir)
    with pytest.raises(Interrupted if how == "exception" else ExternalError):
        ldapio.apply_plan(first, plan, credentials=credentials, on_done=stop_after(900))
    credentials.close()
    with contextlib.suppress(Exception):
        first.unbind()  # the connection goes away with requests still in flight
    partial = settled_accounts(slapd)
    assert 0 < len(partial) < len(roster)

    second = ldapio.connect(settings)
    resumed, _ = make_plan(second, settings, request)
    assert resumed.count("create") == len(roster) - len(partial)
    assert not resumed.agency_creates  # agencies were complete before the first account was sent
    credentials = CredentialsWriter(credentials_dir)
    ldapio.apply_plan(second, resumed, credentials=credentials)
    credentials.close()

    final = accounts_in(slapd)
    assert len(final) == len(roster)
    mails = [a["mail"][0] for a in final.values()]
    assert len(set(mails)) == len(mails)
    collided = sorted(final[f"X{n:03d}"]["mail"][0] for n in range(20))
    assert len(set(collided)) == 20
    assert make_plan(second, settings, request)[0].is_empty
    rows = [row for path in credentials_dir.glob("*.csv") for row in csv.DictReader(path.open())]
    assert len({r["employee_id"] for r in rows}) == len(rows)  # one initial password per account
    assert len(rows) >= len(partial) - 128  # rows for creates acknowledged before the interruption
    second.unbind()


def test_writer_binds_and_a_provisioned_password_binds(slapd: TestSlapd, writer: Connection,
                                                       settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    roster = synthetic.roster(AGENCIES[:2], 4)
    request = write_inputs(tmp_path, roster, AGENCIES[:2])
    credentials = CredentialsWriter(tmp_path / "creds")
    sync(writer, settings, request, credentials)
    credentials.close()
    row = next(csv.DictReader((tmp_path / "creds" / "UBND.csv").open()))
    dn = f"uid={row['employee_id']},ou=people,ou=UBND,ou=agencies,{slapd.base_dn}"
    server = Server("127.0.0.1", port=slapd.port)
    person = Connection(server, dn, row["initial_password"])
    assert person.bind()
    # A new account must change its initial password first (slapo-ppolicy pwdReset, issue 14):
    # until then its session may do nothing else; the person's own change lifts that.
    person.search(dn, "(objectClass=*)", BASE, attributes=["mail"])
    assert person.result["description"] == "insufficientAccessRights"
    assert person.extend.standard.modify_password(dn, row["initial_password"], "Bãi Cháy bridge 2026")
    person.search(dn, "(objectClass=*)", BASE, attributes=["mail"])
    assert person.entries[0].mail.value == row["address"]
    person.unbind()
    with pytest.raises(LDAPInvalidCredentialsResult):
        Connection(server, dn, "wrong", raise_exceptions=True).bind()

    # Dovecot's passdb filter finds the account while it is active, and userPassword stays unreadable.
    dovecot = Connection(server, slapd.service_dn("dovecot"), slapd.service_passwords["dovecot"],
                         raise_exceptions=True, auto_bind=True)
    login_filter = (f"(&(objectClass=qnMailAccount)(mail={escape_filter_chars(row['address'])})"
                    "(qnAccountStatus=active)(qnEnabledService=imap))")
    dovecot.search(slapd.base_dn, login_filter, attributes=["mail", "userPassword"])
    assert len(dovecot.response) == 1
    assert not dovecot.response[0]["raw_attributes"].get("userPassword")

    remaining = [p for p in roster if p.employee_id != row["employee_id"]]
    leaving = dataclasses.replace(write_inputs(tmp_path, remaining, AGENCIES[:2]), allow_mass_change=True)
    sync(writer, settings, leaving)
    dovecot.search(slapd.base_dn, login_filter, attributes=["mail"])
    assert dovecot.response == []  # disabled: the passdb no longer returns it, so login fails


def test_upstream_directory_as_the_roster_source(slapd: TestSlapd, writer: Connection,
                                                 settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    hr = f"ou=hr,{slapd.base_dn}"
    ldif = [f"dn: {hr}\nobjectClass: organizationalUnit\nou: hr\n"]
    for number, name in enumerate(["Nguyễn Văn An", "Trần Thị Bình"], start=1):
        ldif.append(f"dn: uid=hr{number},{hr}\nobjectClass: inetOrgPerson\nuid: hr{number}\ncn: {name}\n"
                    f"sn: x\nemployeeNumber: H{number}\ndepartmentNumber: UBND\n")
    slapd.ldap_tool("ldapadd", input_text="\n".join(ldif))
    password_file = tmp_path / "hr.pw"
    password_file.write_text(slapd.root_password)
    from qnprov.directory.sync import UpstreamSource

    source = UpstreamSource(ldapio.LdapSettings(slapd.url, hr, slapd.root_dn, slapd.root_password), hr,
                            "(&(objectClass=inetOrgPerson)(departmentNumber=*))")
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES[:1])
    request = SyncRequest(agencies_file=tmp_path / "agencies.csv", upstream=source)
    plan, _ = make_plan(writer, settings, request)
    assert [(c.employee_id, c.mail) for c in plan.creates] == [
        ("H1", "annv@quangninh.test"), ("H2", "binhtt@quangninh.test")]


@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
def test_pipelined_apply_over_verified_tls(slapd: TestSlapd, tmp_path: Path, scheme: str) -> None:
    from qnprov_testing.slapd import TLS_SERVER_NAME

    url = slapd.ldaps_url if scheme == "ldaps" else slapd.url
    tls = ldapio.LdapSettings(url=url, base_dn=slapd.base_dn, bind_dn=slapd.writer_dn,
                              bind_password=slapd.writer_password, ca_cert=slapd.ca_cert, domain="quangninh.test",
                              tls_server_name=TLS_SERVER_NAME)
    connection = ldapio.connect(tls)
    assert connection.tls_started or scheme == "ldaps"
    request = write_inputs(tmp_path, synthetic.roster(AGENCIES, 600))
    plan, _ = make_plan(connection, tls, request)
    assert ldapio.apply_plan(connection, plan).created == 600
    assert make_plan(connection, tls, request)[0].is_empty
    connection.unbind()


def test_tls_refuses_a_certificate_for_another_name(slapd: TestSlapd) -> None:

    wrong = ldapio.LdapSettings(url=slapd.ldaps_url, base_dn=slapd.base_dn, bind_dn=slapd.writer_dn,
                                bind_password=slapd.writer_password, ca_cert=slapd.ca_cert)
    with pytest.raises(ExternalError, match="cannot bind"):
        ldapio.connect(wrong)  # the certificate names ldap.qnprov.test, not 127.0.0.1


def test_a_size_limited_writer_gets_a_clear_error(slapd: TestSlapd, writer: Connection,
                                                 settings: ldapio.LdapSettings, tmp_path: Path) -> None:
    """Without olcLimits for cn=qnprov, slapd's default size limit (500) would truncate the read."""
    sync(writer, settings, write_inputs(tmp_path, synthetic.roster(AGENCIES[:2], 600), AGENCIES[:2]))
    result = subprocess.run(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", slapd.ldapi_url], text=True,
                            input="dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\ndelete: olcLimits\n",
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    limited = ldapio.connect(settings)
    with pytest.raises(ExternalError, match=r'olcLimits: dn.exact="cn=qnprov,ou=services,dc=quangninh,dc=test"'):
        ldapio.read_state(limited, slapd.base_dn)
    limited.unbind()
