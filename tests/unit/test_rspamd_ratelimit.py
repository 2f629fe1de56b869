"""The rspamd role's outbound limits (issue 13), rendered as a deploy renders them.

The lab's rendering is kept in tests/unit/data/lab-render/rspamd: a change meant to alter
it replaces those files and says so in its commit message. The lab test
(tests/integration/test_ratelimit_lab.py) runs these files on the real rspamd + Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qnprov_testing.rspamd_ratelimit import FILES, ROLE, lab_variables, render, render_all
from tests.unit.test_store_templates import LAB_RENDER


@pytest.mark.parametrize("dest", sorted(FILES.values()))
def test_lab_rspamd_ratelimit_files_are_unchanged(dest: str) -> None:
    assert render_all()[dest] == (LAB_RENDER / "rspamd" / dest).read_text()


def _block(conf: str, name: str) -> str:
    match = re.search(r"^  " + name + r" \{\n(.*?)^  \}", conf, re.S | re.M)
    assert match, f"no {name} block"
    return match.group(1)


def test_agency_and_account_overrides_reach_the_qnprov_block() -> None:
    # The role's own defaults (the lab inventory raises them for its test-driver accounts).
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["rspamd_ratelimit_limits"]
    conf = render("local.d/ratelimit.conf.j2", lab_variables(
        rspamd_ratelimit_limits=defaults,
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
                             "user_external_recipients_per_hour", "user_external_recipients_per_message",
                             "user_messages_per_hour", "user_recipients_per_hour", "user_recipients_per_message"]
    for name, text in texts.items():
        assert text.isascii(), name
        vi, en = text.split(" / ")
        if name.endswith("_per_hour"):
            assert "vui long thu lai sau" in vi and "try again later" in en, name
        else:  # the same message would be refused again: it has to be split
            assert "chia thanh nhieu thu" in vi and "split it and send again" in en, name
            assert "per message" in en, name
        assert "%N" in vi and "%N" in en, name
    assert "%N external recipients per message" in texts["user_external_recipients_per_message"]


def test_recipients_per_message_defaults_external_stricter_and_overrides() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["rspamd_ratelimit_limits"]
    assert (defaults["user_recipients_per_message"], defaults["user_external_recipients_per_message"]) == (100, 50)
    conf = render("local.d/ratelimit.conf.j2", lab_variables(
        rspamd_ratelimit_limits=defaults,
        rspamd_ratelimit_agency_limits={"SYT": {"user_recipients_per_message": 30,
                                                "user_external_recipients_per_message": 10}},
        rspamd_ratelimit_user_limits={"Press@Quangninh.test": {"user_external_recipients_per_message": 400}},
    ))
    limits = _block(conf, "limits")
    assert "user_recipients_per_message = 100;" in limits
    assert "user_external_recipients_per_message = 50;" in limits
    assert _block(conf, "agency_limits").split() == [
        '"SYT"', "{", "user_external_recipients_per_message", "=", "10;", "user_recipients_per_message", "=", "30;",
        "}"]
    assert _block(conf, "user_limits").split() == [
        '"press@quangninh.test"', "{", "user_external_recipients_per_message", "=", "400;", "}"]


def test_recipients_per_message_is_a_prefilter_that_soft_rejects_and_names_the_limit() -> None:
    lua = render_all()["local.d/qnprov_ratelimit.lua"]
    # rspamd's own soft reject (the milter's 451 4.7.1 at the end of DATA), with the limit's text.
    assert "task:set_pre_result('soft reject', text(name, n), 'ratelimit')" in lua
    # The info symbol the exporter selects on, with the limit's bucket-style name.
    assert "task:insert_result(info_symbol, 1.0, string.format('qnprov_%s(%d>%d)', name, count, n))" in lua
    registration = re.search(r"rspamd_config:register_symbol\(\{(.*?)\}\)", lua, re.S)
    assert registration and "type = 'prefilter'" in registration.group(1)
    assert "callback = recipients_per_message" in registration.group(1)
    # Both counts come from the SMTP envelope; the external one uses the internal domains.
    assert "{'user_recipients_per_message', #(task:get_recipients('smtp') or {})}" in lua
    assert "{'user_external_recipients_per_message', external_count(task)}" in lua
    # Only a count strictly over the limit refuses: a message at the limit passes.
    assert "count > n" in lua


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


# --- the role's input check, run by Ansible itself ------------------------------------------

ASSERT_PLAY = """
- hosts: all
  gather_facts: false
  vars:
    qnprov_hosted_domains: [quangninh.test]
  tasks:
    - ansible.builtin.import_tasks: {tasks}
"""


def _check(tmp_path: Path, **extra: Any) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(ASSERT_PLAY.format(tasks=ROLE / "tasks" / "assert.yml"))
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n")
    (tmp_path / "group_vars").mkdir(exist_ok=True)
    if not (tmp_path / "group_vars" / "all.yml").exists():
        (tmp_path / "group_vars" / "all.yml").symlink_to(ROLE / "defaults" / "main.yml")
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), "-c", "local",
         str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'extra.json'}"],
        capture_output=True, text=True, env=env, timeout=300, check=False)


def test_the_role_accepts_its_defaults_and_valid_overrides(tmp_path: Path) -> None:
    run = _check(tmp_path, rspamd_ratelimit_agency_limits={"SYT": {"agency_messages_per_hour": 5000,
                                                                  "user_recipients_per_message": 30}},
                 rspamd_ratelimit_user_limits={"press@quangninh.test": {"user_external_recipients_per_hour": "800",
                                                                        "user_external_recipients_per_message": 400}})
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Check the outbound limits" in run.stdout


@pytest.mark.parametrize("extra", [
    {"rspamd_ratelimit_agency_limits": {"SYT": {"user_mesages_per_hour": 5}}},  # misspelt key
    {"rspamd_ratelimit_user_limits": {"a@quangninh.test": {"user_messages_per_hour": 0}}},
    {"rspamd_ratelimit_user_limits": {"a@quangninh.test": {"user_messages_per_hour": "ten"}}},
    {"rspamd_ratelimit_limits": {"user_messages_per_hour": 100}},  # incomplete defaults
    {"rspamd_ratelimit_agency_limits": {"SYT": {"user_recipients_per_mesage": 5}}},  # misspelt per-message key
    {"rspamd_ratelimit_user_limits": {"a@quangninh.test": {"user_external_recipients_per_message": 0}}},
    {"rspamd_ratelimit_messages": {k: v for k, v in lab_variables()["rspamd_ratelimit_messages"].items()
                                   if k != "user_external_recipients_per_message"}},  # text missing
    {"rspamd_ratelimit_messages": {**lab_variables()["rspamd_ratelimit_messages"],
                                   "user_messages_per_hour": "Tài khoản đã gửi quá %N thư"}},  # not ASCII
], ids=["misspelt", "zero", "word", "incomplete", "misspelt-per-message", "zero-per-message",
        "per-message-text-missing", "non-ascii"])
def test_the_role_refuses_a_bad_limit(tmp_path: Path, extra: dict[str, Any]) -> None:
    run = _check(tmp_path, **extra)
    assert run.returncode != 0
    assert "rspamd_ratelimit_limits must set exactly" in run.stdout
