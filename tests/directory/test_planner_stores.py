"""The planner with mail stores: which qnMailHost an account gets, and which it keeps."""

from __future__ import annotations

import dataclasses

from test_planner import AN, BINH, CUONG, NOW, SNV, STTTT, directory, person

from qnprov.directory.models import AttributeChange
from qnprov.directory.planner import Desired, PlanOptions, plan
from qnprov.stores.config import parse_store_config

S1, S2 = "store1.quangninh.test", "store2.quangninh.test"
STORES = parse_store_config({"qnprov_stores": [{"name": S1, "replica": S2}, {"name": S2, "replica": S1}],
                             "qnprov_agency_stores": {"SNV": S2}})
WITH_STORES = PlanOptions(default_domain="quangninh.test", now=NOW, stores=STORES)


def roster(*people: object) -> Desired:
    return Desired(agencies=[STTTT, SNV], accounts=list(people))  # type: ignore[arg-type]


def test_new_accounts_get_their_agencys_store() -> None:
    result = plan(roster(person("E7", "STTTT", "Phạm Văn Đức"), person("E8", "SNV", "Hoàng Thị Em")),
                  directory(), WITH_STORES)
    hosts = {c.employee_id: c.attributes.get("qnMailHost") for c in result.creates}
    assert hosts == {"E7": (S1,), "E8": (S2,)}  # STTTT unassigned: the first store


def test_without_stores_no_qn_mail_host_is_written() -> None:
    result = plan(roster(person("E7", "STTTT", "Phạm Văn Đức")), directory(),
                  dataclasses.replace(WITH_STORES, stores=None))
    assert "qnMailHost" not in result.creates[0].attributes


def test_an_account_without_a_store_gets_one_and_one_with_a_store_keeps_it() -> None:
    an = dataclasses.replace(AN, mail_host=S2)  # failed over to store2: never re-homed by a sync
    current = directory(an, BINH, CUONG)
    result = plan(roster(person("E1", "STTTT", AN.cn), person("E2", "STTTT", BINH.cn),
                         person("E3", "SNV", CUONG.cn)), current, WITH_STORES)
    changes = {u.employee_id: u.changes for u in result.updates}
    assert "E1" not in changes
    # STTTT's accounts now live on store2 (where AN is): BINH joins them; SNV is assigned store2.
    assert changes == {"E2": (AttributeChange("qnMailHost", (), (S2,)),),
                       "E3": (AttributeChange("qnMailHost", (), (S2,)),)}
    again = plan(roster(person("E1", "STTTT", AN.cn)), directory(an, dataclasses.replace(BINH, mail_host=S2)),
                 dataclasses.replace(WITH_STORES, partial=True))
    assert again.updates == []
