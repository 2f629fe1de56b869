"""Jinja2 filter: the LDIF that brings a loaded qnprov schema up to the schema file.

``ldapadd`` loads ``templates/openldap/qnprov-schema.ldif`` once, when the directory
has no ``qnprov`` schema entry yet (tasks/config.yml). A directory built by an older
release keeps the old definitions, so an attribute added later (``qnMailHost``) would
be refused with "attribute type undefined". This filter compares the schema entry
slapd holds (``ldapsearch`` output) with the file and returns a ``changetype: modify``
record that replaces both attribute lists, or ``""`` when they already match.

Elements are only ever added (docs/ldap-schema.md: never renumber, only add), so a
replace with a superset is what slapd's cn=config accepts on a live schema entry.
"""

from __future__ import annotations

import base64
import re
from typing import Any

_INDEX = re.compile(r"^\{\d+\}")
_ATTRIBUTES = ("olcAttributeTypes", "olcObjectClasses")


def _records(text: str) -> list[list[tuple[str, str]]]:
    """LDIF records as (attribute, value) lists: comments dropped, folded lines joined."""
    records: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    lines: list[str] = []
    in_comment = False
    for raw in text.splitlines():
        if raw.startswith(" ") and (in_comment or lines):
            if not in_comment:  # a folded comment continues the comment, never the data
                lines[-1] += raw[1:]
            continue
        in_comment = raw.startswith("#")
        if not in_comment:
            lines.append(raw)
    for line in lines:
        if not line.strip():
            if current:
                records.append(current)
                current = []
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not an LDIF line: {line[:60]!r}")
        value = base64.b64decode(value[1:].strip()).decode("utf-8") if value.startswith(":") else value.strip()
        current.append((name.strip(), value))
    if current:
        records.append(current)
    return records


def _normalized(value: str) -> str:
    """A schema definition without slapd's ``{N}`` index, whitespace collapsed."""
    return " ".join(_INDEX.sub("", value).split())


def _oid(value: str) -> str:
    """The numeric OID of a definition: ``( 2.25.1.2 NAME ...`` gives ``2.25.1.2``."""
    parts = _normalized(value).lstrip("(").split()
    return parts[0] if parts else ""


def _definitions(record: list[tuple[str, str]]) -> dict[str, list[str]]:
    wanted = {name.lower(): name for name in _ATTRIBUTES}
    found: dict[str, list[str]] = {name: [] for name in _ATTRIBUTES}
    for name, value in record:
        if name.lower() in wanted:
            found[wanted[name.lower()]].append(value)
    return found


def qnprov_schema_update(schema_file: str, loaded: str) -> str:
    """``changetype: modify`` LDIF for the loaded qnprov schema entry, or ``""`` if current.

    ``schema_file``: the text of qnprov-schema.ldif. ``loaded``: ``ldapsearch -LLL``
    output for the ``cn={N}qnprov,cn=schema,cn=config`` entry with olcAttributeTypes
    and olcObjectClasses. No loaded entry (nothing to compare with) gives ``""``:
    loading the schema the first time is tasks/config.yml's job.
    """
    file_records = _records(schema_file)
    if len(file_records) != 1:
        raise ValueError(f"the schema file holds {len(file_records)} records, expected 1")
    wanted = _definitions(file_records[0])
    entries = [record for record in _records(loaded) if record and record[0][0].lower() == "dn"]
    if not entries:
        return ""
    if len(entries) > 1:
        raise ValueError(f"{len(entries)} qnprov schema entries are loaded, expected 1")
    dn = entries[0][0][1]
    have = _definitions(entries[0])
    if all([_normalized(v) for v in wanted[name]] == [_normalized(v) for v in have[name]]
           for name in _ATTRIBUTES):
        return ""
    wanted_oids = {_oid(v) for name in _ATTRIBUTES for v in wanted[name]}
    removed = [_oid(v) for name in _ATTRIBUTES for v in have[name] if _oid(v) not in wanted_oids]
    if removed:
        # The file dropped an element slapd holds: entries may use it; never drop it silently.
        raise ValueError("the schema file no longer defines these loaded elements "
                         f"(only additions are applied in place): {', '.join(removed)}")
    lines = [f"dn: {dn}", "changetype: modify"]
    for name in _ATTRIBUTES:
        lines.append(f"replace: {name}")
        lines.extend(f"{name}: {_normalized(value)}" for value in wanted[name])
        lines.append("-")
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"qnprov_schema_update": qnprov_schema_update}
