"""The inventory variables the role templates' defaults refer to, for tests that render
templates with Jinja2 alone (no Ansible): the literal ones of inventories/lab, with
stand-ins for its secrets (lookups there)."""

from __future__ import annotations

from typing import Any


def lab_shared(**extra: Any) -> dict[str, Any]:
    """A fresh copy, so a test may change it; ``extra`` replaces or adds keys."""
    return {
        "qnprov_domain": "quangninh.test",
        "qnprov_ldap_base_dn": "dc=quangninh,dc=test",
        "qnprov_ldap_uri": "ldap://127.0.0.1",
        "qnprov_ldap_postfix_password": "postfix-secret",
        "qnprov_ldap_dovecot_password": "dovecot-secret",
        "qnprov_tls_cert_file": "/etc/qnprov/tls/fullchain.pem",
        "qnprov_tls_key_file": "/etc/qnprov/tls/privkey.pem",
        "qnprov_tls_ca_file": "/etc/qnprov/tls/ca.pem",
        "qnprov_hosted_domains": ["quangninh.test", "skhcn.quangninh.test"],
        "role_path": "/unused",
        **extra,
    }
