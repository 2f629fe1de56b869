"""Render the rspamd role's outbound-limit files (issue 13) with Ansible's own templating,
from the role's defaults and the lab inventory's literal values, as a deploy would.

Used by the golden test (tests/unit/test_rspamd_ratelimit.py) and by the lab test, which
renders a copy with low per-test limits and installs it on the lab host."""

from __future__ import annotations

from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from qnprov import paths

ROLE = paths.PROJECT_ROOT / "roles" / "rspamd"
TEMPLATES = paths.PROJECT_ROOT / "templates" / "rspamd"
#: template (relative to templates/rspamd) -> file under /etc/rspamd
FILES = {
    "local.d/ratelimit.conf.j2": "local.d/ratelimit.conf",
    "local.d/metadata_exporter.conf.j2": "local.d/metadata_exporter.conf",
    "lua/qnprov_ratelimit.lua": "local.d/qnprov_ratelimit.lua",
}


def _trust(value: Any) -> Any:
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trust(v) for v in value]
    if isinstance(value, dict):
        return {k: _trust(v) for k, v in value.items()}
    return value


def lab_variables(**overrides: Any) -> dict[str, Any]:
    """Role defaults, then the lab inventory's literal values (its lookups left out: the
    accounts' passwords), then ``overrides``, as Ansible's precedence orders them."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    lab = yaml.safe_load((paths.PROJECT_ROOT / "inventories" / "lab" / "group_vars" / "all" / "main.yml").read_text())
    lab = {k: v for k, v in lab.items() if not (isinstance(v, str) and "lookup(" in v)}
    lab["openldap_accounts"] = [{k: v for k, v in a.items() if k != "password"} for a in lab["openldap_accounts"]]
    return {**defaults, **lab, "role_path": str(ROLE), "ansible_managed": "Managed by qnprov", **overrides}


def render(template: str, variables: dict[str, Any]) -> str:
    templar = Templar(loader=DataLoader(), variables=_trust(variables))
    return str(templar.template(trust_as_template((TEMPLATES / template).read_text())))


def render_all(**overrides: Any) -> dict[str, str]:
    """{file under /etc/rspamd: its rendered text}."""
    variables = lab_variables(**overrides)
    return {dest: render(src, variables) for src, dest in FILES.items()}
