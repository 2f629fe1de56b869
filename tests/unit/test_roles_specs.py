"""Every role's defaults, argument spec and README agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qnprov import paths, roledocs

ROLES = [p for p in sorted(paths.ROLES_DIR.iterdir()) if p.is_dir()]


def _spec(role: Path) -> dict:
    data = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"]["main"]["options"]


def _defaults(role: Path) -> dict:
    return yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}


def test_the_site_roles_exist():
    names = {p.name for p in ROLES}
    assert {"common", "os_hardening", "openldap", "rspamd", "postfix", "dovecot"} <= names


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_the_expected_layout(role: Path):
    for rel in ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml",
                "handlers/main.yml", "README.md"):
        assert (role / rel).is_file(), f"{role.name}: {rel} missing"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_agree(role: Path):
    spec, defaults = _spec(role), _defaults(role)
    assert sorted(set(defaults) - set(spec)) == [], "defaults without an argument spec"
    for name, option in spec.items():
        if name in defaults:
            if "default" in option:
                assert option["default"] == defaults[name], f"{name}: spec default differs from defaults/main.yml"
        else:
            # No default: the spec must say outright whether it is required
            # (optional ones fall back in the tasks, e.g. `| default(...)`).
            assert "required" in option, f"{name}: neither a default nor an explicit required"
        assert option.get("description"), f"{name}: no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_public_variables_carry_the_role_prefix(role: Path):
    shared = {"qnprov_domain", "qnprov_hosted_domains", "qnprov_ldap_base_dn", "qnprov_ldap_uri",
              "qnprov_tls_cert_file", "qnprov_tls_key_file", "qnprov_tls_ca_file", "qnprov_ldap_admin_password",
              "qnprov_ldap_postfix_password", "qnprov_ldap_dovecot_password", "qnprov_ldap_qnprov_password"}
    for name in _defaults(role):
        assert name.startswith(f"{role.name}_") or name in shared, f"{name} lacks the {role.name}_ prefix"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_is_generated_from_the_spec(role: Path):
    assert (role / "README.md").read_text() == roledocs.render_role_readme(role), (
        f"roles/{role.name}/README.md is stale: run python -m qnprov.roledocs")
