"""Jinja2 filter that turns rendered LDIF into records Ansible modules can apply.

The shared templates under ``templates/openldap/`` are LDIF, because the test
slapd fixture loads them with ldapadd/ldapmodify. The role applies the same
text through ``community.general.ldap_entry`` and ``ldap_attrs`` instead, which
compare before they write and so report ``changed`` honestly. This filter is the
bridge: it understands the subset of RFC 2849 those templates use (comments,
folded lines, ``attr: value``, ``attr:: base64``, add records and modify records
with ``add``/``replace``/``delete`` parts) and refuses anything else loudly.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

_MODIFY_OPERATIONS = frozenset({"add", "replace", "delete"})


class LdifSyntaxError(ValueError):
    """The LDIF text uses a construct this filter does not understand."""


def _unfold(text: str) -> list[str]:
    """Join folded lines (RFC 2849: a continuation line starts with one space) and drop comments."""
    lines: list[str] = []
    in_comment = False
    for raw_line in text.splitlines():
        if raw_line.startswith(" ") and (in_comment or (lines and lines[-1] != "")):
            if not in_comment:
                lines[-1] += raw_line[1:]
        elif raw_line.startswith("#"):
            in_comment = True
        else:
            in_comment = False
            lines.append(raw_line.rstrip("\r"))
    return lines


def _split_line(line: str) -> tuple[str, str]:
    name, separator, rest = line.partition(":")
    if not separator or not name:
        raise LdifSyntaxError(f"not an 'attribute: value' line: {line!r}")
    if rest.startswith(":"):
        try:
            value = base64.b64decode(rest[1:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise LdifSyntaxError(f"bad base64 value for {name!r}") from error
        return name, value
    if rest.startswith("<"):
        raise LdifSyntaxError(f"URL values are not supported ({name!r})")
    return name, rest.lstrip(" ")


def _parse_record(block: list[str]) -> dict[str, Any]:
    dn_name, dn = _split_line(block[0])
    if dn_name.lower() != "dn":
        raise LdifSyntaxError(f"record does not start with dn: {block[0]!r}")
    body = [_split_line(line) if line != "-" else ("-", "") for line in block[1:]]
    if body and body[0][0].lower() == "changetype":
        changetype = body[0][1].strip().lower()
        body = body[1:]
    else:
        changetype = "add"
    if changetype == "add":
        attributes: dict[str, list[str]] = {}
        for name, value in body:
            if name == "-":
                raise LdifSyntaxError(f"'-' separator inside an add record ({dn})")
            attributes.setdefault(name, []).append(value)
        return {"dn": dn, "changetype": "add", "attributes": attributes}
    if changetype == "modify":
        return {"dn": dn, "changetype": "modify", "changes": _parse_changes(dn, body)}
    raise LdifSyntaxError(f"changetype {changetype!r} is not supported ({dn})")


def _parse_changes(dn: str, body: list[tuple[str, str]]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for name, value in body:
        if name == "-":
            current = None
        elif current is None:
            operation = name.lower()
            if operation not in _MODIFY_OPERATIONS:
                raise LdifSyntaxError(f"unknown modify operation {name!r} ({dn})")
            current = {"operation": operation, "attribute": value.strip(), "values": []}
            changes.append(current)
        elif name.lower() != current["attribute"].lower():
            raise LdifSyntaxError(f"value for {name!r} inside the {current['attribute']!r} part ({dn})")
        else:
            current["values"].append(value)
    return changes


def ldif_records(text: str) -> list[dict[str, Any]]:
    """Parse LDIF text into a list of records.

    An add record becomes ``{"dn", "changetype": "add", "attributes": {name: [values]}}``;
    a modify record becomes ``{"dn", "changetype": "modify", "changes": [{"operation",
    "attribute", "values"}]}``. Attribute names keep the spelling of the template.
    """
    records: list[dict[str, Any]] = []
    block: list[str] = []
    for line in [*_unfold(text), ""]:
        if line.strip() == "":
            if block:
                records.append(_parse_record(block))
                block = []
        elif line.lower().startswith("version:") and not records and not block:
            continue
        else:
            block.append(line)
    return records


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"ldif_records": ldif_records}
