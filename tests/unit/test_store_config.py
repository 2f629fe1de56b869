"""qnprov_stores and qnprov_agency_stores: what a coherent store layout is."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qnprov.errors import ConfigError
from qnprov.stores.config import Store, parse_store_config

PAIR = [{"name": "Store1.quangninh.test.", "replica": "store2.quangninh.test"},
        {"name": "store2.quangninh.test", "replica": "store1.quangninh.test"}]


def test_a_pair_with_assignments() -> None:
    config = parse_store_config({"qnprov_stores": PAIR, "qnprov_agency_stores": {"SNV": "store2.quangninh.test"}})
    assert config.enabled
    assert config.stores == (Store("store1.quangninh.test", "store2.quangninh.test"),
                             Store("store2.quangninh.test", "store1.quangninh.test"))
    assert config.store_for("snv") == "store2.quangninh.test"
    assert config.store_for("STTTT") == "store1.quangninh.test"  # unassigned: the first store
    assert config.get("STORE2.quangninh.test").replica == "store1.quangninh.test"


def test_no_stores_is_off() -> None:
    assert not parse_store_config({}).enabled
    assert not parse_store_config({"qnprov_stores": []}).enabled


@pytest.mark.parametrize(("variables", "message"), [
    ({"qnprov_stores": [{"name": "store1.quangninh.test"}]}, "mail store store1.quangninh.test has no replica"),
    ({"qnprov_stores": [{"name": "store1.quangninh.test", "replica": "store1.quangninh.test"}]},
     "must be another store's host name"),
    ({"qnprov_stores": [{"name": "store1.quangninh.test", "replica": "store2.quangninh.test"}]},
     "its replica store2.quangninh.test is not in qnprov_stores"),
    ({"qnprov_stores": [{"name": "store1)(x=*", "replica": "a.b"}]}, "is not a host name"),
    ({"qnprov_stores": "store1"}, "must be a list"),
    ({"qnprov_stores": PAIR, "qnprov_agency_stores": {"SNV": "store9.quangninh.test"}},
     "agency SNV is assigned to 'store9.quangninh.test', which is not in qnprov_stores"),
    ({"qnprov_stores": [*PAIR, PAIR[1]]}, "lists a store twice"),
])
def test_incoherent_layouts_are_refused(variables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_store_config(variables)
