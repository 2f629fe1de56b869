"""The resolver role's unbound.conf and resolv.conf render with plain Jinja2 from the role's defaults and the lab data.

The rendered unbound.conf is also checked by the real unbound-checkconf, inside the lab
container (tests/integration/test_resolver_lab.py), since the host has no unbound.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
import pytest
import yaml

from qnprov import paths

TEMPLATES = paths.PROJECT_ROOT / "templates" / "resolver"
ROLE = paths.PROJECT_ROOT / "roles" / "resolver"
LAB_VARS = paths.PROJECT_ROOT / "inventories" / "lab" / "group_vars" / "all" / "main.yml"
PRODUCTION_VARS = paths.PROJECT_ROOT / "inventories" / "example-production" / "group_vars"


def _variables(**overrides: Any) -> dict[str, Any]:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    defaults = {k: v for k, v in defaults.items() if k != "resolver_templates_dir"}
    defaults.update(overrides)
    return defaults


def _lab_variables() -> dict[str, Any]:
    lab = yaml.safe_load(LAB_VARS.read_text())
    return _variables(**{k: v for k, v in lab.items() if k.startswith("resolver_")})


def render(name: str, variables: dict[str, Any]) -> str:
    # Ansible's template module defaults: trim_blocks on, lstrip_blocks off.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, keep_trailing_newline=True, autoescape=False)  # noqa: S701
    return env.get_template(f"{name}.j2").render(variables)


def _server(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of the server: clause, in order."""
    pairs, clause = [], None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.strip().startswith(("local-data", "local-data-ptr")) else raw
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            clause = line.strip().rstrip(":")
            continue
        if clause == "server":
            key, _, value = line.strip().partition(":")
            pairs.append((key, value.strip()))
    return pairs


def _values(pairs: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in pairs if k == key]


@pytest.mark.parametrize("variables", [_variables(), _lab_variables()], ids=["defaults", "lab"])
def test_unbound_listens_on_loopback_only_and_refuses_everyone_else(variables: dict[str, Any]) -> None:
    pairs = _server(render("unbound.conf", variables))
    assert _values(pairs, "interface") == ["127.0.0.1", "::1"]
    acl = _values(pairs, "access-control")
    assert acl == ["0.0.0.0/0 refuse", "::0/0 refuse", "127.0.0.0/8 allow", "::1/128 allow"]


@pytest.mark.parametrize("variables", [_variables(), _lab_variables()], ids=["defaults", "lab"])
def test_unbound_validates_and_is_hardened(variables: dict[str, Any]) -> None:
    pairs = dict(_server(render("unbound.conf", variables)))
    assert pairs["module-config"] == '"validator iterator"'
    for key in ("hide-identity", "hide-version", "qname-minimisation", "harden-dnssec-stripped", "harden-glue",
                "deny-any"):
        assert pairs[key] == "yes", key
    anchor = "trust-anchor-file" if variables["resolver_offline"] else "auto-trust-anchor-file"
    assert pairs[anchor] in ('"/usr/share/dns/root.key"', '"/var/lib/unbound/root.key"')


def test_production_resolves_the_internet_without_a_refusing_root() -> None:
    text = render("unbound.conf", _variables())
    pairs = _server(text)
    assert "local-zone" not in dict(pairs), "production must not carry lab local zones"
    assert "forward-zone" not in text, "production recurses itself; it forwards nowhere"
    assert dict(pairs)["auto-trust-anchor-file"] == '"/var/lib/unbound/root.key"'


def test_lab_refuses_every_name_but_its_local_data() -> None:
    variables = _lab_variables()
    text = render("unbound.conf", variables)
    zones = _values(_server(text), "local-zone")
    assert zones[0] == '"." refuse'
    assert '"quangninh.test." static' in zones
    assert '"example.org." static' in zones
    # The only names let through are the package mirror's, marked insecure.
    transparent = [z for z in zones if z.endswith(" transparent")]
    assert transparent == ['"deb.debian.org." transparent', '"security.debian.org." transparent']
    assert _values(_server(text), "domain-insecure") == ['"deb.debian.org."', '"security.debian.org."']
    # Without recorded upstream nameservers there is no forward-zone at all.
    assert "forward-zone" not in text


def test_lab_local_data_covers_the_outside_test_senders() -> None:
    text = render("unbound.conf", _lab_variables())
    data = [v.strip("'") for v in _values(_server(text), "local-data")]
    records = {(r.split()[0], r.split()[3]): " ".join(r.split()[4:]) for r in data}
    # The HELO names and sender domains tests/integration use from outside.
    assert records[("mx.example.org.", "A")] == "10.88.0.1"
    assert records[("client.example.org.", "A")] == "192.0.2.25"
    assert records[("example.org.", "MX")] == "10 mx.example.org."
    assert records[("example.org.", "TXT")] == '"v=spf1 ip4:10.88.0.0/16 ip4:192.0.2.0/24 -all"'
    assert records[("facebookmail.com.", "MX")] == "10 mx.example.org."
    assert records[("quangninh.test.", "MX")] == "10 mail1.quangninh.test."
    ptrs = _values(_server(text), "local-data-ptr")
    assert '"10.88.0.1 mx.example.org"' in ptrs


def test_lab_forwards_the_mirror_only_to_recorded_upstreams() -> None:
    variables = _lab_variables() | {"__resolver_upstream": ["10.255.255.53"]}
    text = render("unbound.conf", variables)
    blocks = re.findall(r"^forward-zone:\n((?:    .*\n)+)", text, re.M)
    assert blocks == [
        '    name: "deb.debian.org."\n    forward-addr: 10.255.255.53\n',
        '    name: "security.debian.org."\n    forward-addr: 10.255.255.53\n',
    ]


def test_resolv_conf_names_only_the_local_resolver_with_trust_ad() -> None:
    text = render("resolv.conf", _variables())
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["nameserver 127.0.0.1", "nameserver ::1", "options trust-ad edns0"]


def test_production_inventory_does_not_turn_offline_mode_on() -> None:
    for path in PRODUCTION_VARS.rglob("*.yml"):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict):
            assert not data.get("resolver_offline"), f"{path}: production must resolve the Internet"
