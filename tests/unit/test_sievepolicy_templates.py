"""The webmail's clause 1.3(2) filter check (qnprov_sievepolicy, issue 14), rendered and run under the real PHP.

The free-mail list is rendered the way roles/webmail renders it (the controller runs
``python -m qnprov policy freemail domains EXTRA...``, the template writes the lines into
the plugin's config.inc.php) and read back by PHP; the checker is run by PHP 8.2 (Debian's
php-cli, the lab's PHP) on Sieve scripts such as the filter UI and the raw editor write.
tests/integration/test_webmail_sievepolicy_lab.py drives the running Roundcube in a browser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from test_webmail_templates import _php_settings, _variables, render

from qnprov import paths
from qnprov.policy import forwarding

ROLE = paths.PROJECT_ROOT / "roles" / "webmail"

# Loads the rendered plugin (on a stand-in rcube_plugin) and config, then answers
# each script of the JSON list on stdin with the checker's verdict.
_HARNESS = r"""<?php
class rcube_plugin {}
require $argv[1];
$config = [];
if ($argv[2] !== '-') { include $argv[2]; }
$domains = $config['qnprov_sievepolicy_freemail_domains'] ?? [];
$check = new qnprov_sieve_forward_check($domains);
$out = ['domains' => $domains, 'verdicts' => []];
foreach (json_decode(stream_get_contents(STDIN), true) as $script) {
    $r = $check->refusal($script);
    $out['verdicts'][] = $r === null ? null : $r + ['message' => qnprov_sieve_forward_check::message($r)];
}
echo json_encode($out);
"""


def _role_command_lines(extra: list[str]) -> list[str]:
    """What tasks/sievepolicy.yml registers: the controller command's stdout_lines."""
    proc = subprocess.run([sys.executable, "-m", "qnprov", "policy", "freemail", "domains", *extra],
                          capture_output=True, text=True, check=True, cwd=paths.PROJECT_ROOT)
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("php"), "php is not installed (run scripts/bootstrap.sh)"
    where = tmp_path_factory.mktemp("sievepolicy")
    for name in ("qnprov_sievepolicy.php", "qnprov_sievepolicy_engines.php"):
        target = where / name
        target.write_text(render(f"webmail/{name}.j2", _variables()))
        lint = subprocess.run(["php", "-l", str(target)], capture_output=True, text=True, check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    (where / "harness.php").write_text(_HARNESS)
    return where


def _config(where: Path, extra: list[str]) -> Path:
    config = where / f"config-{len(extra)}.inc.php"
    config.write_text(render("webmail/qnprov_sievepolicy.config.inc.php.j2",
                             _variables(__webmail_freemail_domains=_role_command_lines(extra))))
    return config


def _run(where: Path, scripts: list[str], config: Path | str = "-") -> dict:
    proc = subprocess.run(["php", "-d", "display_errors=stderr", str(where / "harness.php"),
                           str(where / "qnprov_sievepolicy.php"), str(config)],
                          input=json.dumps(scripts), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_the_list_is_the_postfix_list_with_the_same_extras(plugin: Path) -> None:
    extra = ["Free.Example.", "mail.example.net"]
    answer = _run(plugin, [], _config(plugin, extra))
    # Exactly what roles/postfix's re-injection table is generated from.
    assert answer["domains"] == forwarding.freemail_domains(extra)
    assert "gmail.com" in answer["domains"] and "free.example" in answer["domains"]
    assert len(answer["domains"]) == len(forwarding.freemail_domains()) + 2
    table = forwarding.render_freemail_recipient_regexp(forwarding.freemail_domains(extra))
    assert len(table.splitlines()) - 2 == len(answer["domains"])


def test_the_extra_domains_follow_postfixs_by_default() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    expression = defaults["webmail_freemail_extra_domains"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701 (not HTML)

    def value(**variables: object) -> str:
        return env.from_string(expression).render(**variables)

    assert value(postfix_qnprov_freemail_extra_domains=["free.example"]) == "['free.example']"
    assert value() == "[]"


def test_roundcube_loads_the_plugin() -> None:
    settings = _php_settings(render("webmail/config.inc.php.j2", _variables()))
    assert "'qnprov_sievepolicy'" in settings["plugins"]
    without = _php_settings(render("webmail/config.inc.php.j2", _variables(webmail_autoconfig_enabled=False)))
    assert "'qnprov_sievepolicy'" in without["plugins"]


# (script, the listed domain it is refused for, its line) — None: accepted.
REFUSED = [
    ('redirect "boss@gmail.com";', "gmail.com", 1),
    ('redirect :copy "boss@gmail.com";', "gmail.com", 1),
    ('REDIRECT :COPY "Boss@GMail.COM";', "gmail.com", 1),
    ('redirect "boss@mail.gmail.com";', "gmail.com", 1),
    ('redirect "boss@Inbox.Yahoo.Com.VN.";', "yahoo.com.vn", 1),
    ('redirect "<boss@gmail.com>";', "gmail.com", 1),
    ('redirect "boss\\@gmail.com";', "gmail.com", 1),
    ('require ["copy"];\n# a comment\nif header :contains "subject" "x" {\n  stop;\n}\n'
     'if true { redirect :copy "a@quangninh.test"; redirect\n  "b@hotmail.com"; }', "hotmail.com", 7),
    ('redirect text:\nboss@gmail.com\n.\n;', "gmail.com", 1),
    ('redirect :notify "never" :ret "hdrs" "boss@gmail.com";', "gmail.com", 1),
    ('if true{redirect"boss@gmail.com";}', "gmail.com", 1),
    ('keep;\r\nif true\r\n{\r\n\tRedirect\r\n "boss@qq.com";\r\n}\r\n', "qq.com", 5),
    ('notify "mailto:a@quangninh.test?cc=b%40gmail.com";', "gmail.com", 1),
    ('notify :message "${subject}" "mailto:boss@outlook.com";', "outlook.com", 1),
]
ACCEPTED = [
    'redirect "boss@quangninh.test";',
    'redirect :copy "vanthu@sotttt.quangninh.gov.vn";',
    'redirect "boss@notgmail.com";',
    'redirect "boss@gmail.com.example";',
    '# redirect "boss@gmail.com";\nkeep;',
    '/* redirect "boss@gmail.com";\n */ keep;',
    'if address :is "from" "citizen@gmail.com" { fileinto "Dân"; }',
    'fileinto "gmail.com";',
    'vacation :addresses ["me@gmail.com"] :subject "@gmail.com" "Nghỉ phép";',
    'notify :from "x@gmail.com" :message "${subject} @gmail.com" "mailto:boss@quangninh.test";',
    'notify "xmpp:boss@gmail.com";',
    'redirect "a@quangninh.test"; keep; # redirect "b@gmail.com"',
]


@pytest.fixture(scope="module")
def verdicts(plugin: Path) -> tuple[list, list]:
    config = _config(plugin, [])
    refused = _run(plugin, [s for s, _, _ in REFUSED], config)["verdicts"]
    accepted = _run(plugin, ACCEPTED, config)["verdicts"]
    return refused, accepted


@pytest.mark.parametrize(("index", "case"), list(enumerate(REFUSED)), ids=[s[:40] for s, _, _ in REFUSED])
def test_free_mail_redirects_are_refused(verdicts: tuple[list, list], index: int, case: tuple) -> None:
    _, domain, line = case
    verdict = verdicts[0][index]
    assert verdict is not None
    assert (verdict["domain"], verdict["line"]) == (domain, line)
    assert "khoản 1.3(2)" in verdict["message"] and "clause 1.3(2)" in verdict["message"]
    assert "Không được chuyển tiếp" in verdict["message"] and "is forbidden" in verdict["message"]


@pytest.mark.parametrize(("index", "script"), list(enumerate(ACCEPTED)), ids=[s[:40] for s in ACCEPTED])
def test_other_scripts_are_accepted(verdicts: tuple[list, list], index: int, script: str) -> None:
    assert verdicts[1][index] is None, script


def test_an_address_built_from_variables_is_refused_as_uncheckable(plugin: Path) -> None:
    scripts = ['require ["variables"];\nset "d" "gmail.com";\nredirect "boss@${d}";',
               'redirect "boss@${hex:67 6d 61 69 6c}.com";']
    for verdict in _run(plugin, scripts, _config(plugin, []))["verdicts"]:
        assert verdict["domain"] is None and verdict["command"] == "redirect"
        assert "không kiểm tra được" in verdict["message"].lower() and "cannot be checked" in verdict["message"]
        assert "clause 1.3(2)" in verdict["message"]


def test_the_refusal_is_escaped_for_roundcubes_html_messages(plugin: Path) -> None:
    verdict = _run(plugin, ['redirect "<img src=x onerror=alert(1)>@gmail.com";'], _config(plugin, []))["verdicts"][0]
    assert verdict["domain"] == "gmail.com"
    assert "<img" not in verdict["message"] and "&lt;img src=x onerror=alert(1)&gt;@gmail.com" in verdict["message"]


def test_without_a_list_every_redirect_is_refused(plugin: Path) -> None:
    # A missing or broken config.inc.php: fail closed (the role refuses to write one).
    answer = _run(plugin, ['redirect "boss@quangninh.test";', "keep;"])
    assert answer["domains"] == []
    assert answer["verdicts"][0]["domain"] == "quangninh.test"
    assert answer["verdicts"][1] is None
