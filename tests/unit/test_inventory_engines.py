"""The inventory reader's second-engine side: role variables rendered as a play renders them, vault included."""

from __future__ import annotations

from pathlib import Path

import pytest

from qnprov import inventory
from qnprov.errors import ConfigError


def _vaulted(secret: str, password: str) -> str:
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    return vault.encrypt(secret).decode()


@pytest.fixture()
def site(tmp_path: Path) -> tuple[Path, Path, Path]:
    password_file = tmp_path / "vault-pass"
    password_file.write_text("correct horse\n")
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    mta:\n      hosts:\n        mx1:\n"
        "          ansible_host: 192.0.2.10\n          ansible_user: deploy\n          ansible_become: true\n"
        "          ansible_ssh_common_args: -o UserKnownHostsFile=/k -o StrictHostKeyChecking=accept-new\n")
    vaulted = _vaulted("s3cr3t", "correct horse").replace("\n", "\n    ")
    (inv / "group_vars" / "all.yml").write_text(
        f"site_token: !vault |\n    {vaulted}\nsite_greeting: \"hello {{{{ inventory_hostname }}}}\"\n"
        "role_value: from-inventory\n")
    role = tmp_path / "role"
    (role / "defaults").mkdir(parents=True)
    (role / "vars").mkdir()
    (role / "defaults" / "main.yml").write_text("role_value: from-defaults\nrole_only: \"{{ site_token }}\"\n")
    (role / "vars" / "main.yml").write_text("__role_private: \"{{ role_value | upper }}\"\n")
    (role / "t.j2").write_text("{% if true %}\ntoken={{ role_only }}\n{% endif %}\n"
                               "{{ {'b': 1, 'a': [2]} | to_nice_yaml(indent=2) }}")
    return inv, role, password_file


def test_role_variables_follow_ansibles_precedence_and_render(site: tuple[Path, Path, Path]) -> None:
    inv, role, password_file = site
    variables = inventory.load(inv, vault_password_file=password_file).role_vars("mx1", role)
    assert variables.value("role_value") == "from-inventory"  # inventory over role defaults
    assert variables.value("__role_private") == "FROM-INVENTORY"  # role vars see the inventory's value
    assert variables.value("site_greeting") == "hello mx1"
    assert variables.value("role_only") == "s3cr3t"  # vault decrypted with the password file
    # As the template module renders: trim_blocks, Ansible's filters.
    assert variables.render(role / "t.j2") == "token=s3cr3t\na:\n- 2\nb: 1\n"


def test_a_vault_value_without_the_password_is_an_error_naming_it(site: tuple[Path, Path, Path]) -> None:
    inv, role, _ = site
    variables = inventory.load(inv).role_vars("mx1", role)
    with pytest.raises(ConfigError, match="role_only"):
        variables.value("role_only")


def test_the_ssh_target_is_ansibles(site: tuple[Path, Path, Path]) -> None:
    inv, _, _ = site
    target = inventory.load(inv).ssh_target("mx1")
    assert (target.hostname, target.port, target.user, target.key, target.become) == (
        "192.0.2.10", 22, "deploy", None, True)
    assert (target.known_hosts, target.strict_host_key_checking) == ("/k", "accept-new")
