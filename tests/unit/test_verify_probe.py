"""verify's probe recipient is its own address, never an account provisioning manages (issue 9, item 6).

`accounts apply` manages the people under ou=agencies in LDAP and disables whoever is not
in the HR roster, demo accounts included. verify's probe address is the postfix role's
table alias ``qnprov-verify-probe@<domain>`` instead: not an LDAP entry at all.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from qnprov import lab, paths
from qnprov.controls.target import DEFAULT_PROBE_LOCAL_PART, probe_recipient
from qnprov.controls.verify import lab_config_targets, remote_target
from qnprov.errors import ConfigError

POSTFIX_DEFAULTS = yaml.safe_load((paths.ROLES_DIR / "postfix" / "defaults" / "main.yml").read_text())


def _postmap_q(key: str, table: Path) -> subprocess.CompletedProcess[str]:
    postmap = shutil.which("postmap", path="/usr/sbin:/usr/bin")
    assert postmap, "postmap not installed: run scripts/bootstrap.sh"
    (table.parent / "main.cf").touch()  # a private config_directory, never the host's /etc/postfix
    return subprocess.run([postmap, "-c", str(table.parent), "-q", key, f"texthash:{table}"],
                          capture_output=True, text=True, timeout=30, check=False)


def _render_role_addresses(tmp_path: Path, **overrides: object) -> Path:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths.TEMPLATES_DIR / "postfix"),  # noqa: S701
                             undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    variables = {
        "postfix_role_address_recipient": "quantri@quangninh.test",
        "postfix_hosted_domains": ["quangninh.test", "skhcn.quangninh.test"],
        "postfix_role_address_names": POSTFIX_DEFAULTS["postfix_role_address_names"],
        "postfix_verify_probe_local_part": POSTFIX_DEFAULTS["postfix_verify_probe_local_part"],
        **overrides,
    }
    table = tmp_path / "role_addresses"
    table.write_text(env.get_template("role_addresses.j2").render(variables))
    return table


def test_the_postfix_role_and_verify_agree_on_the_probe_address():
    assert POSTFIX_DEFAULTS["postfix_verify_probe_local_part"] == DEFAULT_PROBE_LOCAL_PART
    assert probe_recipient({}, "quangninh.gov.vn") == "qnprov-verify-probe@quangninh.gov.vn"


def test_the_role_table_accepts_the_probe_address_in_every_hosted_domain(tmp_path: Path):
    table = _render_role_addresses(tmp_path)
    for domain in ("quangninh.test", "skhcn.quangninh.test"):
        found = _postmap_q(f"qnprov-verify-probe@{domain}", table)
        assert (found.returncode, found.stdout.strip()) == (0, "quantri@quangninh.test"), found
    missing = _postmap_q("qnprov-verify-probe@other.test", table)
    assert (missing.returncode, missing.stdout) == (1, ""), missing
    none = _render_role_addresses(tmp_path, postfix_verify_probe_local_part="")
    assert "qnprov-verify-probe" not in none.read_text()


def test_lab_target_probes_the_role_address_not_a_demo_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("QNPROV_STATE_DIR", str(tmp_path))
    config = lab.load_lab_config(paths.INVENTORIES_DIR / "lab")
    [target] = lab_config_targets(config)
    assert target.probe_recipient == "qnprov-verify-probe@quangninh.test"
    assert target.probe_recipient not in {account.address for account in config.accounts}


def test_production_target_defaults_to_the_probe_address_and_honours_the_variable():
    default = remote_target("mx1.quangninh.gov.vn", {"qnprov_domain": "quangninh.gov.vn"})
    assert default.probe_recipient == "qnprov-verify-probe@quangninh.gov.vn"
    renamed = remote_target("mx1", {"qnprov_domain": "quangninh.gov.vn", "postfix_verify_probe_local_part": "probe"})
    assert renamed.probe_recipient == "probe@quangninh.gov.vn"
    explicit = remote_target("mx1", {"qnprov_domain": "quangninh.gov.vn",
                                     "qnprov_verify_probe_recipient": "thamdo@quangninh.gov.vn"})
    assert explicit.probe_recipient == "thamdo@quangninh.gov.vn"
    with pytest.raises(ConfigError, match="qnprov_verify_probe_recipient"):
        remote_target("mx1", {"qnprov_domain": "quangninh.gov.vn", "postfix_verify_probe_local_part": ""})
