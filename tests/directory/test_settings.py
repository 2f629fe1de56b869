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


def test_every_reachable_provider_from_qnprov_ldap_uris(tmp_path: Path) -> None:
    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        "qnprov_ldap_base_dn: dc=quangninh,dc=gov,dc=vn\nqnprov_ldap_uri: ldap://127.0.0.1\n"
        "qnprov_ldap_uris: [ldaps://ldap1.quangninh.gov.vn, 'ldap://127.0.0.1', ldaps://ldap2.quangninh.gov.vn]\n")
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    settings = resolve_settings(ConnectionOptions(inventory=str(inventory), bind_password_file=password))
    # The host's own loopback is no use from the operator's machine; the order is kept.
    assert settings.urls == ("ldaps://ldap1.quangninh.gov.vn", "ldaps://ldap2.quangninh.gov.vn")
    assert (settings.url, settings.fallback_urls) == ("ldaps://ldap1.quangninh.gov.vn",
                                                      ("ldaps://ldap2.quangninh.gov.vn",))


def test_ldap_url_option_takes_several_urls(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    for given in ("ldaps://a.test ldaps://b.test", "ldaps://a.test,ldaps://b.test",
                  " ldaps://a.test , ldaps://b.test "):
        settings = resolve_settings(ConnectionOptions(ldap_url=given, base_dn="dc=quangninh,dc=test",
                                                      bind_password_file=password))
        assert settings.urls == ("ldaps://a.test", "ldaps://b.test")
