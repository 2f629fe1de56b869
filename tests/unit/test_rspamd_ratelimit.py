"""The rspamd role's outbound limits (issue 13), rendered as a deploy renders them.

The lab's rendering is kept in tests/unit/data/lab-render/rspamd: a change meant to alter
it replaces those files and says so in its commit message. The lab test
(tests/integration/test_ratelimit_lab.py) runs these files on the real rspamd + Redis."""

from __future__ import annotations

import re

import pytest

from qnprov_testing.rspamd_ratelimit import FILES, lab_variables, render, render_all
from tests.unit.test_store_templates import LAB_RENDER


@pytest.mark.parametrize("dest", sorted(FILES.values()))
def test_lab_rspamd_ratelimit_files_are_unchanged(dest: str) -> None:
    assert render_all()[dest] == (LAB_RENDER / "rspamd" / dest).read_text()


def _block(conf: str, name: str) -> str:
    match = re.search(r"^  " + name + r" \{\n(.*?)^  \}", conf, re.S | re.M)
    assert match, f"no {name} block"
    return match.group(1)


def test_agency_and_account_overrides_reach_the_qnprov_block() -> None:
    conf = render("local.d/ratelimit.conf.j2", lab_variables(
        rspamd_ratelimit_agency_limits={"SYT": {"agency_messages_per_hour": 5000, "user_messages_per_hour": 40}},
        rspamd_ratelimit_user_limits={"Press@Quangninh.test": {"user_external_recipients_per_hour": 800}},
    ))
    assert _block(conf, "agency_limits").split() == [
        '"SYT"', "{", "agency_messages_per_hour", "=", "5000;", "user_messages_per_hour", "=", "40;", "}"]
    assert _block(conf, "user_limits").split() == [
        '"press@quangninh.test"', "{", "user_external_recipients_per_hour", "=", "800;", "}"]
    limits = _block(conf, "limits")
    assert "user_external_recipients_per_hour = 150;" in limits
    assert "user_recipients_per_hour = 500;" in limits  # external is stricter than all recipients


def test_agency_of_an_account_comes_from_the_roster_then_the_domain() -> None:
    variables = lab_variables(
        openldap_agencies=[{"code": "SKHCN", "domain": "quangninh.test"},
                           {"code": "SYT", "domain": "syt.quangninh.test"},
                           {"code": "STC", "domain": "quangninh.test"}],
        openldap_accounts=[{"mail": "An@quangninh.test", "agency": "SKHCN"}, {"mail": "x@syt.quangninh.test"}],
    )
    conf = render("local.d/ratelimit.conf.j2", variables)
    assert _block(conf, "user_agency").split() == ['"an@quangninh.test"', "=", '"SKHCN";']
    # quangninh.test is shared by two agencies: it names neither.
    assert _block(conf, "domain_agency").split() == ['"syt.quangninh.test"', "=", '"SYT";']
    internal = re.search(r"internal_domains = \[(.*?)\];", conf, re.S)
    assert internal and internal.group(1).split() == ['"quangninh.test",', '"syt.quangninh.test",']


def test_reply_texts_are_ascii_and_bilingual() -> None:
    conf = render_all()["local.d/ratelimit.conf"]
    texts = dict(re.findall(r'^    (\w+) = "(.*)";$', _block(conf, "messages"), re.M))
    assert sorted(texts) == ["agency_external_recipients_per_hour", "agency_messages_per_hour",
                             "user_external_recipients_per_hour", "user_messages_per_hour",
                             "user_recipients_per_hour"]
    for name, text in texts.items():
        assert text.isascii(), name
        vi, en = text.split(" / ")
        assert "vui long thu lai sau" in vi and "try again later" in en, name
        assert "%N" in vi and "%N" in en, name


def test_disabled_limits_render_no_buckets() -> None:
    conf = render("local.d/ratelimit.conf.j2", lab_variables(rspamd_ratelimit_enabled=False))
    assert "custom_keywords =" not in conf and "rates {}" in conf


def test_exporter_fires_on_the_symbol_the_ratelimit_adds() -> None:
    files = render_all()
    assert 'info_symbol = "QNPROV_RATELIMIT";' in files["local.d/ratelimit.conf"]
    exporter = files["local.d/metadata_exporter.conf"]
    assert "task:has_symbol('QNPROV_RATELIMIT')" in exporter
    assert "/usr/bin/logger -t qnprov-ratelimit -p " in exporter
    assert "'mail.alert'" in exporter and "'QNPROV-RATE-BURST'" in exporter
