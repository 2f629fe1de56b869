"""Check an inventory's topology before anything runs on its hosts.

The argument specs (:mod:`qnprov.argspec`) check each host's variables one by one;
some layouts are wrong only as a whole, and Ansible would find out half a deployment
in, or never (a store whose accounts have nowhere to fail over to). ``qnprov deploy``
(and ``qnprov lab up``) refuse such an inventory with one line saying why:

* directory replication turned on (``openldap_replication_enabled``) with fewer than
  two hosts in the ``directory`` group: there is no peer to replicate with;
* a mail store in ``qnprov_stores`` (a list of ``{name: FQDN, replica: FQDN}``) without
  a replica, or whose replica is not another host of the ``store`` group;
* hosts of the ``mta`` group that disagree on the DKIM selector
  (``rspamd_dkim_selector``): mail signed by one MTA would not verify against the
  DNS record published for the other's.

A store's name matches a host by its inventory name, its ``qnprov_lab_hostname``
(lab containers) or its literal ``common_tls_fqdn`` (the name its certificate has).
Values Ansible must render first (templates, vault) are not guessed at: a templated
``qnprov_stores`` or replication switch is left to the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from qnprov import inventory as inventory_mod
from qnprov import paths
from qnprov.errors import ConfigError

REPLICATION_VAR = "openldap_replication_enabled"
STORES_VAR = "qnprov_stores"
DKIM_SELECTOR_VAR = "rspamd_dkim_selector"
#: Variables that name a host the way qnprov_stores does (an FQDN).
HOST_NAME_VARS = ("qnprov_lab_hostname", "common_tls_fqdn")


def _role_default(role: str, name: str, roles_dir: Path) -> Any:
    defaults = roles_dir / role / "defaults" / "main.yml"
    if not defaults.is_file():
        return None
    return (yaml.safe_load(defaults.read_text()) or {}).get(name)


def _names_of(host: str, hostvars: Mapping[str, Any]) -> set[str]:
    names = {host.lower()}
    for var in HOST_NAME_VARS:
        value = hostvars.get(var)
        if isinstance(value, str) and not inventory_mod.is_deferred(value):
            names.add(value.lower())
    return names


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "on", "1"}
    return bool(value)


def check_replication(groups: Mapping[str, list[str]], hostvars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    directory = groups.get("directory", [])
    enabled = sorted(h for h, hv in hostvars.items()
                     if REPLICATION_VAR in hv and not inventory_mod.is_deferred(hv[REPLICATION_VAR])
                     and _truthy(hv[REPLICATION_VAR]))
    if not enabled or len(directory) >= 2:
        return []
    where = f"1 host ({directory[0]})" if len(directory) == 1 else "no host"
    return [f"{REPLICATION_VAR} is on but the directory group has {where}; "
            "multi-provider replication needs at least two directory providers"]


def check_stores(groups: Mapping[str, list[str]], hostvars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    declared = [hv[STORES_VAR] for hv in hostvars.values()
                if STORES_VAR in hv and not inventory_mod.is_deferred(hv[STORES_VAR])]
    if not declared:
        return []
    problems = []
    distinct = {repr(d) for d in declared}
    if len(distinct) > 1:
        problems.append(f"the hosts disagree on {STORES_VAR}; every host must route to the same stores")
    stores = declared[0] or []
    if not isinstance(stores, list):
        return [*problems, f"{STORES_VAR} must be a list of {{name: FQDN, replica: FQDN}}"]
    store_hosts = groups.get("store", [])
    by_name: dict[str, str] = {}
    for host in store_hosts:
        for name in _names_of(host, hostvars.get(host, {})):
            by_name[name] = host
    listed = ", ".join(store_hosts) or "none"
    for entry in stores:
        if not isinstance(entry, Mapping) or not entry.get("name"):
            problems.append(f"{STORES_VAR}: an entry has no name ({entry!r}); each is {{name: FQDN, replica: FQDN}}")
            continue
        name = str(entry["name"])
        replica = str(entry.get("replica") or "").strip()
        own = by_name.get(name.lower())
        if own is None:
            problems.append(f"store {name} in {STORES_VAR} is not a host of the store group ({listed})")
        elif not replica:
            problems.append(f"store {name} in {STORES_VAR} has no replica; "
                            "each store needs another host of the store group as its replica")
        elif by_name.get(replica.lower()) in (None, own):
            problems.append(f"store {name} has replica {replica}, which is not another host of the "
                            f"store group ({listed})")
    return problems


def check_dkim_selectors(groups: Mapping[str, list[str]], hostvars: Mapping[str, Mapping[str, Any]],
                         default: Any) -> list[str]:
    selectors = {host: str(inventory_mod.plain(hostvars.get(host, {}).get(DKIM_SELECTOR_VAR, default)))
                 for host in groups.get("mta", [])}
    if len(set(selectors.values())) <= 1:
        return []
    listed = ", ".join(f"{host}: {selector}" for host, selector in sorted(selectors.items()))
    return [f"the mta hosts disagree on {DKIM_SELECTOR_VAR} ({listed}); "
            "every MTA must sign with the same selector and key"]


def problems(inventory: Path, *, roles_dir: Path | None = None) -> list[str]:
    """Every topology problem of an inventory, one line each (empty: it can work)."""
    parsed = inventory_mod.load(inventory)
    groups = parsed.groups()
    hostvars = parsed.all_host_vars()
    default = _role_default("rspamd", DKIM_SELECTOR_VAR, roles_dir or paths.ROLES_DIR)
    return [*check_replication(groups, hostvars), *check_stores(groups, hostvars),
            *check_dkim_selectors(groups, hostvars, default)]


def require_valid_topology(inventory: Path, *, roles_dir: Path | None = None) -> None:
    """Raise ConfigError with one line (the first problem) when the topology cannot work."""
    found = problems(inventory, roles_dir=roles_dir)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{inventory.name}: topology: {found[0]}{more}")
