"""The planner as data: given this directory and this roster, expect exactly this plan."""

from __future__ import annotations

import dataclasses

import pytest

from qnprov.directory.models import (
    Account,
    Agency,
    AttributeChange,
    DirectoryAccount,
    DirectoryGroup,
    DirectoryState,
    Plan,
    account_dn,
    agency_entries,
    all_group_dn,
)
from qnprov.directory.planner import Desired, PlanOptions, mass_change_refusal, plan

BASE = "dc=quangninh,dc=test"
NOW = "20261129120000Z"
OPTIONS = PlanOptions(default_domain="quangninh.test", now=NOW)
STTTT = Agency("STTTT", "Sở Thông tin và Truyền thông")
SNV = Agency("SNV", "Sở Nội vụ")


def directory(*accounts: DirectoryAccount, agencies: tuple[Agency, ...] = (STTTT, SNV)) -> DirectoryState:
    """A converged directory holding ``accounts`` (lists included)."""
    state = DirectoryState(base_dn=BASE, agencies={a.code: a for a in agencies})
    for agency in agencies:
        state.present_dns.update(dn.lower() for dn, _ in agency_entries(agency, BASE, "quangninh.test"))
        state.taken_addresses.add(f"{agency.code.lower()}@quangninh.test")
        members = frozenset(a.dn for a in accounts if a.agency == agency.code and a.status == "active")
        state.groups[agency.code] = DirectoryGroup(all_group_dn(BASE, agency.code), agency.code,
                                                   f"{agency.code.lower()}@quangninh.test", members)
    for account in accounts:
        state.accounts[account.employee_id] = account
        state.taken_addresses.add(account.mail)
        state.taken_addresses.update(account.aliases)
    return state


def existing(eid: str, agency: str, name: str, mail: str, *, title: str = "Chuyên viên",
             status: str = "active", disabled_at: str | None = None) -> DirectoryAccount:
    family, *rest = name.split()
    return DirectoryAccount(dn=account_dn(BASE, agency, eid), employee_id=eid, agency=agency, cn=name, sn=family,
                            given_name=" ".join(rest), title=title, mail=mail, status=status,
                            disabled_at=disabled_at, agency_code=agency, employee_number=eid)


def person(eid: str, agency: str, name: str, *, title: str = "Chuyên viên", status: str = "active") -> Account:
    return Account(eid, agency, name, title, status)  # type: ignore[arg-type]


AN = existing("E1", "STTTT", "Nguyễn Văn An", "annv@quangninh.test")
BINH = existing("E2", "STTTT", "Trần Thị Bình", "binhtt@quangninh.test")
CUONG = existing("E3", "SNV", "Lê Văn Cường", "cuonglv@quangninh.test")
ROSTER = [person("E1", "STTTT", "Nguyễn Văn An"), person("E2", "STTTT", "Trần Thị Bình"),
          person("E3", "SNV", "Lê Văn Cường")]


def run(roster: list[Account], state: DirectoryState, **options: object) -> Plan:
    return plan(Desired(agencies=[STTTT, SNV], accounts=roster), state,
                PlanOptions(default_domain="quangninh.test", now=NOW, **options))  # type: ignore[arg-type]


def test_converged_directory_gives_an_empty_plan() -> None:
    result = run(ROSTER, directory(AN, BINH, CUONG))
    assert result.is_empty
    assert result.summary(applied=False) == {"create": 0, "modify": 0, "move": 0, "disable": 0, "enable": 0,
                                             "errors": [], "applied": False}


def test_new_person_is_created_with_every_attribute_and_joins_the_list() -> None:
    result = run([*ROSTER, person("E4", "SNV", "Nguyễn Văn An", title="")], directory(AN, BINH, CUONG))
    assert [c.employee_id for c in result.creates] == ["E4"]
    create = result.creates[0]
    assert create.dn == f"uid=E4,ou=people,ou=SNV,ou=agencies,{BASE}"
    assert create.mail == "annv2@quangninh.test"  # annv is taken by E1
    assert create.attributes == {
        "objectClass": ("top", "inetOrgPerson", "inetLocalMailRecipient", "qnMailAccount"),
        "uid": ("E4",), "employeeNumber": ("E4",), "cn": ("Nguyễn Văn An",), "sn": ("Nguyễn",),
        "givenName": ("Văn An",), "mail": ("annv2@quangninh.test",), "qnAgencyCode": ("SNV",),
        "qnAccountStatus": ("active",), "qnEnabledService": ("smtp", "imap", "sieve"),
        "qnMailQuota": (str(1024**3),),
    }
    assert [(g.agency, g.add, g.remove) for g in result.group_updates] == [("SNV", (create.dn,), ())]


def test_collisions_are_resolved_in_employee_id_order_whatever_the_roster_order() -> None:
    roster = [person("E9", "SNV", "Nguyễn Văn An"), person("E7", "SNV", "Nguyễn Văn An"),
              person("E8", "SNV", "Nguyễn Vũ An")]
    first = run(roster, directory())
    second = run(list(reversed(roster)), directory())
    assert [(c.employee_id, c.mail) for c in first.creates] == [
        ("E7", "annv@quangninh.test"), ("E8", "annv2@quangninh.test"), ("E9", "annv3@quangninh.test")]
    assert first.creates == second.creates


def test_rename_keeps_the_address_and_updates_the_name_attributes() -> None:
    roster = [person("E1", "STTTT", "Nguyễn Văn Anh"), *ROSTER[1:]]
    result = run(roster, directory(AN, BINH, CUONG))
    assert result.creates == []
    (update,) = result.updates
    assert update.kind == "modify"
    assert update.changes == (AttributeChange("cn", ("Nguyễn Văn An",), ("Nguyễn Văn Anh",)),
                              AttributeChange("givenName", ("Văn An",), ("Văn Anh",)))
    assert all(change.attribute != "mail" for change in update.changes)


def test_rename_with_alias_adds_the_new_name_as_an_alias() -> None:
    roster = [person("E1", "STTTT", "Nguyễn Văn Anh"), *ROSTER[1:]]
    (update,) = run(roster, directory(AN, BINH, CUONG), alias_on_rename=True).updates
    assert AttributeChange("mailLocalAddress", (), ("anhnv@quangninh.test",)) in update.changes


def test_transfer_moves_the_entry_and_keeps_the_address() -> None:
    roster = [person("E1", "SNV", "Nguyễn Văn An"), *ROSTER[1:]]
    result = run(roster, directory(AN, BINH, CUONG))
    (update,) = result.updates
    assert update.kind == "move"
    assert update.new_dn == f"uid=E1,ou=people,ou=SNV,ou=agencies,{BASE}"
    assert update.changes == (AttributeChange("qnAgencyCode", ("STTTT",), ("SNV",)),)
    lists = {g.agency: (g.add, g.remove) for g in result.group_updates}
    assert lists == {"SNV": ((update.new_dn,), ()), "STTTT": ((), (AN.dn,))}


def test_leaver_is_disabled_and_leaves_the_list() -> None:
    roster = [person("E1", "STTTT", "Nguyễn Văn An", status="left"), *ROSTER[1:]]
    result = run(roster, directory(AN, BINH, CUONG))
    (update,) = result.updates
    assert (update.kind, update.changes) == ("disable", (
        AttributeChange("qnAccountStatus", ("active",), ("disabled",)),
        AttributeChange("qnDisabledAt", (), (NOW,))))
    assert [(g.agency, g.remove) for g in result.group_updates] == [("STTTT", (AN.dn,))]


def test_missing_from_the_roster_is_disabled_unless_partial() -> None:
    state = directory(AN, BINH, CUONG)
    result = run(ROSTER[:2], state)
    assert [(u.kind, u.employee_id) for u in result.updates] == [("disable", "E3")]
    assert run(ROSTER[:2], state, partial=True).is_empty


def test_returning_person_is_re_enabled_with_the_same_address() -> None:
    gone = existing("E1", "STTTT", "Nguyễn Văn An", "annv@quangninh.test", status="disabled",
                    disabled_at="20260101000000Z")
    result = run(ROSTER, directory(gone, BINH, CUONG))
    (update,) = result.updates
    assert update.kind == "enable"
    assert update.changes == (AttributeChange("qnAccountStatus", ("disabled",), ("active",)),
                              AttributeChange("qnDisabledAt", ("20260101000000Z",), ()))
    assert result.creates == []
    assert [(g.agency, g.add) for g in result.group_updates] == [("STTTT", (gone.dn,))]


def test_a_leaver_who_never_had_an_account_creates_nothing() -> None:
    result = run([*ROSTER, person("E5", "SNV", "Hồ Thị Lan", status="left")], directory(AN, BINH, CUONG))
    assert result.is_empty


def test_title_change_is_a_modify_with_the_diff() -> None:
    roster = [person("E1", "STTTT", "Nguyễn Văn An", title="Trưởng phòng"), *ROSTER[1:]]
    (update,) = run(roster, directory(AN, BINH, CUONG)).updates
    assert update.changes == (AttributeChange("title", ("Chuyên viên",), ("Trưởng phòng",)),)


def test_new_agency_gets_its_five_entries_and_reserves_its_list_address() -> None:
    new = Agency("VP", "Văn phòng UBND")
    result = plan(Desired(agencies=[STTTT, SNV, new], accounts=[person("E6", "VP", "Võ Phương")]),
                  directory(), OPTIONS)
    (agency_create,) = result.agency_creates
    assert [dn.split(",")[0] for dn, _ in agency_create.entries] == [
        "ou=VP", "ou=people", "ou=groups", "cn=vp-all", "cn=vp-admins"]
    assert result.creates[0].mail == "phuongv@quangninh.test"


def test_half_created_agency_gets_only_its_missing_entries() -> None:
    state = directory()
    state.present_dns.discard(all_group_dn(BASE, "SNV").lower())
    (agency_create,) = run(ROSTER[:0], state).agency_creates
    assert [dn for dn, _ in agency_create.entries] == [all_group_dn(BASE, "SNV")]


def test_mass_change_guard() -> None:
    state = directory(AN, BINH, CUONG)
    result = run(ROSTER[:2], state)  # one of three disabled: 33%
    assert result.mass_change_ratio == pytest.approx(1 / 3)
    reason = mass_change_refusal(result, 0.05)
    assert reason is not None and "--allow-mass-change" in reason
    assert mass_change_refusal(result, 0.5) is None
    assert mass_change_refusal(run(ROSTER, directory()), 0.05) is None  # first import: nothing existing


def test_input_errors_are_carried_into_the_plan() -> None:
    from qnprov.directory.models import RowError

    desired = Desired(agencies=[STTTT, SNV], accounts=ROSTER, errors=[RowError(4, "status", "unknown")])
    result = plan(desired, directory(AN, BINH, CUONG), OPTIONS)
    assert result.summary(applied=False)["errors"] == [{"line": 4, "field": "status", "reason": "unknown"}]


def test_forwards_are_managed_only_when_the_input_has_the_column() -> None:
    forwarding = dataclasses.replace(AN, forwards=("an@stttt.quangninh.test",))
    state = directory(forwarding, BINH, CUONG)
    assert run(ROSTER, state).is_empty  # no forward column: existing forwards are left alone
    roster = [dataclasses.replace(ROSTER[0], forwards=()), *ROSTER[1:]]
    (update,) = run(roster, state).updates
    assert update.changes == (AttributeChange("qnMailForward", ("an@stttt.quangninh.test",), ()),)
    created = run([*ROSTER, Account("E8", "SNV", "Hồ Thị Lan", forwards=("lan@snv.quangninh.test",))],
                  state).creates
    assert created[0].attributes["qnMailForward"] == ("lan@snv.quangninh.test",)


def test_agency_with_its_own_domain_gives_addresses_there() -> None:
    own = Agency("BQL", "Ban quản lý", domain="bql.quangninh.test")
    result = plan(Desired(agencies=[own], accounts=[person("E9", "BQL", "Nguyễn Văn An")]), directory(AN),
                  OPTIONS)
    assert result.creates[0].mail == "annv@bql.quangninh.test"  # annv is taken only in quangninh.test


def test_renamed_agency_and_new_parent_are_updated() -> None:
    renamed = Agency("SNV", "Sở Nội vụ tỉnh Quảng Ninh", parent="STTTT")
    result = plan(Desired(agencies=[STTTT, renamed], accounts=ROSTER), directory(AN, BINH, CUONG), OPTIONS)
    (update,) = result.agency_updates
    assert update.dn == f"ou=SNV,ou=agencies,{BASE}"
    assert update.changes == (AttributeChange("description", ("Sở Nội vụ",), ("Sở Nội vụ tỉnh Quảng Ninh",)),
                              AttributeChange("qnParentAgency", (), ("STTTT",)))
    assert not result.creates and not result.updates
