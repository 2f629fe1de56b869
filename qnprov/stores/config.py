"""Which mail stores exist, which is whose replica, and where each agency's mail lives.

Read from an inventory's ``all`` variables (literal values):

``qnprov_stores``
    a list of ``{name: FQDN, replica: FQDN}``; empty or absent turns every store feature
    off (the all-in-one lab). Every store needs a replica that is another listed store.
``qnprov_agency_stores``
    ``{AGENCY_CODE: store FQDN}``: the store an agency's first accounts are created on.
    Agencies not listed go to the first store.

The same two variables drive roles/postfix (transport_maps) and roles/dovecot (proxy,
replication); ``qnprov accounts apply`` and ``qnprov store`` read them here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qnprov import inventory as inventory_mod
from qnprov import paths
from qnprov.errors import ConfigError

# A host name: what may go into qnMailHost, an LDAP filter and a Postfix transport unescaped.
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True)
class Store:
    name: str
    replica: str


@dataclass(frozen=True)
class StoreConfig:
    stores: tuple[Store, ...] = ()
    agency_stores: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.stores)

    def get(self, name: str) -> Store:
        wanted = name.lower().rstrip(".")
        for store in self.stores:
            if store.name == wanted:
                return store
        listed = ", ".join(s.name for s in self.stores) or "none"
        raise ConfigError(f"{name!r} is not a mail store of this inventory (qnprov_stores: {listed})")

    def store_for(self, agency: str) -> str:
        """The store a new account of ``agency`` goes to (its assignment, else the first store)."""
        if not self.stores:
            raise ConfigError("no mail stores are configured (qnprov_stores is empty)")
        for code, store in self.agency_stores.items():
            if code.lower() == agency.lower():
                return store
        return self.stores[0].name


def parse_store_config(variables: Mapping[str, Any]) -> StoreConfig:
    """Validate ``qnprov_stores`` and ``qnprov_agency_stores``; one clear line for what is wrong."""
    raw = variables.get("qnprov_stores") or []
    if not isinstance(raw, list):
        raise ConfigError("qnprov_stores must be a list of {name: FQDN, replica: FQDN}")
    stores: list[Store] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ConfigError(f"qnprov_stores[{index}] must be a mapping with name and replica")
        name, replica = str(item.get("name") or "").lower().rstrip("."), str(item.get("replica") or "")
        replica = replica.lower().rstrip(".")
        if not HOSTNAME.match(name):
            raise ConfigError(f"qnprov_stores[{index}].name {name!r} is not a host name (FQDN)")
        if not replica:
            raise ConfigError(f"mail store {name} has no replica (qnprov_stores[{index}].replica)")
        if not HOSTNAME.match(replica) or replica == name:
            raise ConfigError(f"mail store {name}: replica {replica!r} must be another store's host name")
        stores.append(Store(name, replica))
    names = [s.name for s in stores]
    if len(set(names)) != len(names):
        raise ConfigError("qnprov_stores lists a store twice")
    for store in stores:
        if store.replica not in names:
            raise ConfigError(f"mail store {store.name}: its replica {store.replica} is not in qnprov_stores")
    assignments = variables.get("qnprov_agency_stores") or {}
    if not isinstance(assignments, Mapping):
        raise ConfigError("qnprov_agency_stores must map agency codes to store host names")
    agency_stores: dict[str, str] = {}
    for code, store_name in assignments.items():
        value = str(store_name).lower().rstrip(".")
        if value not in names:
            raise ConfigError(f"qnprov_agency_stores: agency {code} is assigned to {store_name!r}, "
                              "which is not in qnprov_stores")
        agency_stores[str(code)] = value
    return StoreConfig(tuple(stores), agency_stores)


def load_store_config(inventory: str) -> StoreConfig:
    """The store configuration of an inventory (a name under inventories/ or a path)."""
    loaded = inventory_mod.load(paths.resolve_inventory(inventory))
    return parse_store_config(loaded.literal_group_vars("all"))
