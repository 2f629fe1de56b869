"""Connection settings from an inventory (no server needed)."""

from __future__ import annotations

from pathlib import Path

from qnprov.directory.settings import ConnectionOptions, resolve_settings


def test_inventory_gives_base_dn_and_a_reachable_uri(tmp_path: Path) -> None:
    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        "qnprov_domain: quangninh.gov.vn\nqnprov_ldap_base_dn: dc=quangninh,dc=gov,dc=vn\n"
        "qnprov_ldap_uri: ldap://ldap1.quangninh.gov.vn\n"
        "qnprov_ldap_qnprov_password: \"{{ vault_qnprov_ldap_qnprov_password }}\"\n")
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    settings = resolve_settings(ConnectionOptions(inventory=str(inventory), bind_password_file=password))
    assert (settings.url, settings.base_dn, settings.bind_dn, settings.domain, settings.bind_password) == (
        "ldap://ldap1.quangninh.gov.vn", "dc=quangninh,dc=gov,dc=vn", "cn=qnprov,ou=services,dc=quangninh,dc=gov,dc=vn",
        "quangninh.gov.vn", "s3cret")
    assert "s3cret" not in repr(settings)



def test_loopback_service_uri_is_not_used_from_the_operator_machine(tmp_path: Path) -> None:
    import pytest

    from qnprov.errors import ConfigError

    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        "qnprov_ldap_base_dn: dc=quangninh,dc=test\nqnprov_ldap_uri: ldap://127.0.0.1\n")
    password = tmp_path / "pw"
    password.write_text("x")
    with pytest.raises(ConfigError, match="no LDAP URL"):
        resolve_settings(ConnectionOptions(inventory=str(inventory), bind_password_file=password))
