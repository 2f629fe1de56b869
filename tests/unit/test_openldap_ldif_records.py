"""The openldap role's LDIF filter, fed the real shared templates."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import jinja2
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates" / "openldap"
BASE_DN = "dc=quangninh,dc=test"


def _load_filter_module() -> ModuleType:
    path = REPO / "roles" / "openldap" / "filter_plugins" / "ldif_records.py"
    spec = importlib.util.spec_from_file_location("qnprov_ldif_records", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ldif = _load_filter_module()


def _render(name: str, **variables: object) -> str:
    # Ansible renders role templates with trim_blocks=True; do the same here.
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - LDIF, not HTML
    )
    return environment.get_template(name).render(**variables)


def test_access_template_becomes_one_ordered_replace() -> None:
    text = _render(
        "access.ldif.j2",
        openldap_db_dn="olcDatabase={1}mdb,cn=config",
        openldap_base_dn=BASE_DN,
        openldap_service_readers=["postfix", "dovecot"],
        openldap_service_writers=["qnprov"],
    )
    [record] = ldif.ldif_records(text)
    assert record["dn"] == "olcDatabase={1}mdb,cn=config"
    assert record["changetype"] == "modify"
    [change] = record["changes"]
    assert change["operation"] == "replace"
    assert change["attribute"] == "olcAccess"
    values = change["values"]
    assert [value[:3] for value in values] == ["{0}", "{1}", "{2}"]
    # Folded lines are joined exactly as slapd stores them: one space between clauses.
    assert values[0] == (
        "{0}to attrs=userPassword by self =xw"
        f' by dn.exact="cn=qnprov,ou=services,{BASE_DN}" =w by anonymous auth by * none'
    )
    assert f'by dn.exact="cn=postfix,ou=services,{BASE_DN}" read' in values[2]
    assert f'by dn.exact="cn=dovecot,ou=services,{BASE_DN}" read' in values[2]


def test_dit_template_becomes_add_records() -> None:
    text = _render(
        "dit.ldif.j2",
        openldap_base_dn=BASE_DN,
        openldap_organization="Quang Ninh",
        openldap_hosted_domains=["quangninh.test", "halong.test"],
        openldap_service_accounts=[
            {"cn": "postfix", "password_hash": "{ARGON2}$argon2i$x", "description": "reader"},
        ],
    )
    records = ldif.ldif_records(text)
    by_dn = {record["dn"]: record for record in records}
    assert by_dn[BASE_DN]["attributes"]["dc"] == ["quangninh"]
    assert by_dn[BASE_DN]["attributes"]["objectClass"] == ["top", "dcObject", "organization"]
    assert f"associatedDomain=halong.test,ou=domains,{BASE_DN}" in by_dn
    service = by_dn[f"cn=postfix,ou=services,{BASE_DN}"]
    assert service["attributes"]["userPassword"] == ["{ARGON2}$argon2i$x"]
    assert all(record["changetype"] == "add" for record in records)
    # Parents come before children, so adding in order always works.
    positions = {record["dn"]: index for index, record in enumerate(records)}
    assert positions[BASE_DN] < positions[f"ou=services,{BASE_DN}"] < positions[service["dn"]]


def test_schema_file_with_comments_and_folded_definitions() -> None:
    [record] = ldif.ldif_records((TEMPLATES / "qnprov-schema.ldif").read_text(encoding="utf-8"))
    assert record["dn"] == "cn=qnprov,cn=schema,cn=config"
    attribute_types = record["attributes"]["olcAttributeTypes"]
    assert len(attribute_types) == 10
    assert "NAME 'qnMailQuota'" in attribute_types[0]
    assert "NAME 'qnMailHost'" in attribute_types[9]
    assert "\n" not in attribute_types[0]


def test_base64_values_and_version_line() -> None:
    text = "version: 1\n\ndn: cn=x,dc=t\ncn:: eMOi\ndescription: a\n  folded\n"
    [record] = ldif.ldif_records(text)
    assert record["attributes"] == {"cn": ["x\u00e2"], "description": ["a folded"]}


def test_comment_continuation_is_not_glued_to_data() -> None:
    text = "dn: cn=x,dc=t\n# a comment\n that continues\ncn: x\n"
    [record] = ldif.ldif_records(text)
    assert record["attributes"] == {"cn": ["x"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cn: x\n", "does not start with dn"),
        ("dn: cn=x\nchangetype: delete\n", "not supported"),
        ("dn: cn=x\nchangetype: modify\nincrement: uidNumber\nuidNumber: 1\n", "unknown modify operation"),
        ("dn: cn=x\nchangetype: modify\nreplace: cn\nsn: y\n", "inside the 'cn' part"),
        ("dn: cn=x\njpegPhoto:< file:///etc/passwd\n", "URL values"),
        ("dn: cn=x\ncn:: !!!\n", "bad base64"),
        ("dn: cn=x\nno colon here\n", "not an 'attribute: value' line"),
    ],
)
def test_unsupported_ldif_is_refused(text: str, message: str) -> None:
    with pytest.raises(ldif.LdifSyntaxError, match=message):
        ldif.ldif_records(text)
