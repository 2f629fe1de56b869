"""An existing directory gets schema additions (qnMailHost) from the openldap role.

A real slapd is built with the schema an older release loaded (this file without
qnMailHost), then the two commands of roles/openldap/tasks/schema_update.yml run
against it exactly as the task file spells them (argv read from the YAML), with the
role's filter computing the change. slapd itself accepts or refuses the definitions.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from qnprov import paths
from qnprov_testing.slapd import TestSlapd, running_test_slapd

SCHEMA = paths.PROJECT_ROOT / "templates" / "openldap" / "qnprov-schema.ldif"
TASKS = paths.PROJECT_ROOT / "roles" / "openldap" / "tasks" / "schema_update.yml"


def _filter_module() -> ModuleType:
    path = paths.PROJECT_ROOT / "roles" / "openldap" / "filter_plugins" / "qnprov_schema_update.py"
    spec = importlib.util.spec_from_file_location("qnprov_schema_update", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


update = _filter_module().qnprov_schema_update


def old_schema_text() -> str:
    """The schema as the release before qnMailHost shipped it."""
    text = SCHEMA.read_text()
    start = text.index("olcAttributeTypes: ( 2.25.176997394291602235102289777695985763848.1.10")
    end = text.index("olcObjectClasses:", start)
    text = text[:start] + text[end:]
    return text.replace(" $ qnMailHost )", " )")


def _task_argv(index: int, ldapi: str) -> list[str]:
    task = yaml.safe_load(TASKS.read_text())[index]
    return [arg.replace("{{ __openldap_ldapi_uri }}", ldapi) for arg in task["ansible.builtin.command"]["argv"]]


def _converge(server: TestSlapd) -> tuple[str, str]:
    """One run of the task file: read the loaded entry, apply the filter's change if any."""
    loaded = subprocess.run(_task_argv(0, server.ldapi_url), capture_output=True, text=True, check=True).stdout
    change = update(SCHEMA.read_text(), loaded)
    if change:
        result = subprocess.run(_task_argv(1, server.ldapi_url), input=change, capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr
    return loaded, change


def _account_ldif(server: TestSlapd, host: str) -> str:
    return (f"dn: uid=T1,ou=services,{server.base_dn}\n"
            "objectClass: inetOrgPerson\nobjectClass: qnMailAccount\nuid: T1\ncn: T\nsn: T\n"
            f"mail: t1@quangninh.test\nqnMailHost: {host}\n")


def test_an_existing_directory_gets_qn_mail_host_and_the_second_run_changes_nothing(tmp_path: Path) -> None:
    old = tmp_path / "old-schema.ldif"
    old.write_text(old_schema_text())
    with running_test_slapd(tmp_path, schema_file=old) as server:
        refused = server.ldap_tool("ldapadd", input_text=_account_ldif(server, "store1.quangninh.test"), check=False)
        assert refused.returncode != 0 and "qnMailHost" in refused.stderr, refused.stderr

        loaded, change = _converge(server)
        assert "qnMailHost" not in loaded
        assert "replace: olcAttributeTypes" in change and "NAME 'qnMailHost'" in change

        server.ldap_tool("ldapadd", input_text=_account_ldif(server, "store1.quangninh.test"))
        found = server.ldap_tool("ldapsearch", "-LLL", "-b", server.base_dn, "(qnMailHost=STORE1.quangninh.test)",
                                 "qnMailHost").stdout
        assert "qnMailHost: store1.quangninh.test" in found  # caseIgnoreIA5Match, as the schema says

        loaded_again, change_again = _converge(server)
        assert "NAME 'qnMailHost'" in loaded_again
        assert change_again == ""


def test_a_current_directory_needs_no_change(tmp_path: Path) -> None:
    with running_test_slapd(tmp_path) as server:
        loaded, change = _converge(server)
    assert "NAME 'qnMailHost'" in loaded
    assert change == ""


def test_a_schema_file_that_drops_a_loaded_element_is_refused() -> None:
    loaded = ("dn: cn={4}qnprov,cn=schema,cn=config\n"
              "olcAttributeTypes: {0}( 2.25.1.1 NAME 'a' SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )\n"
              "olcAttributeTypes: {1}( 2.25.1.2 NAME 'b' SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )\n")
    newer = ("dn: cn=qnprov,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: qnprov\n"
             "olcAttributeTypes: ( 2.25.1.1 NAME 'a' SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )\n")
    with pytest.raises(ValueError, match=r"2\.25\.1\.2"):
        update(newer, loaded)


def test_a_folded_comment_is_not_read_as_a_definition() -> None:
    loaded = ("dn: cn={4}qnprov,cn=schema,cn=config\n"
              "olcAttributeTypes: {0}( 2.25.1.1 NAME 'a' SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )\n")
    newer = ("# a comment\n that continues\ndn: cn=qnprov,cn=schema,cn=config\nobjectClass: olcSchemaConfig\n"
             "olcAttributeTypes: ( 2.25.1.1 NAME 'a'\n  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )\n")
    assert update(newer, loaded) == ""
