"""The webmail role's templates render with plain Jinja2 and say what the role promises.

The rendered files are also checked by the real tools in the lab container before
they go live (php -l, php-fpm -t, nginx -t on a staged tree, fail2ban-client -t);
tests/integration/test_webmail_lab.py drives the running result.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
import pytest
import yaml

from qnprov import paths

TEMPLATES = paths.PROJECT_ROOT / "templates"
ROLE = paths.PROJECT_ROOT / "roles" / "webmail"


def _variables(**overrides: Any) -> dict[str, Any]:
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values.update(yaml.safe_load((ROLE / "vars" / "main.yml").read_text()))
    values.update({
        "webmail_server_name": "mail1.quangninh.test",
        "webmail_tls_peer_name": "mail1.quangninh.test",
        "webmail_tls_cert_file": "/etc/qnprov/tls/fullchain.pem",
        "webmail_tls_key_file": "/etc/qnprov/tls/privkey.pem",
        "webmail_tls_ca_file": "/etc/qnprov/tls/ca.pem",
        "webmail_des_key": "abcdefghijklmnopqrstuvwx",
        "webmail_ldap_uri": "ldap://127.0.0.1",
        "webmail_ldap_search_base": "ou=agencies,dc=quangninh,dc=test",
        "webmail_ldap_search_dn": "cn=dovecot,ou=services,dc=quangninh,dc=test",
        "webmail_ldap_search_password": "s3cret",
    })
    values.update(overrides)
    return values


def render(name: str, variables: dict[str, Any]) -> str:
    # Ansible's template module defaults: trim_blocks on, lstrip_blocks off.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, keep_trailing_newline=True, autoescape=False)  # noqa: S701
    # Ansible's bool filter, the one non-Jinja2 filter the templates use.
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in ("yes", "true", "1", "on")
    return env.get_template(name).render(variables)


def _php_settings(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\$config\['(\w+)'\] = (.+);$", text, re.M))


def test_roundcube_talks_tls_with_verified_peers_in_vietnamese():
    text = render("webmail/config.inc.php.j2", _variables())
    settings = _php_settings(text)
    assert settings["imap_host"] == "'ssl://127.0.0.1:993'"
    assert settings["smtp_host"] == "'tls://127.0.0.1:587'"
    assert settings["imap_conn_options"] == settings["smtp_conn_options"] == "$qnprov_tls"
    assert "'verify_peer' => true" in text and "'verify_peer_name' => true" in text
    # Reached on loopback, checked against the official name.
    assert "'peer_name' => 'mail1.quangninh.test'" in text
    assert "=> false" not in text.split("$qnprov_tls = [", 1)[1].split("];", 1)[0].replace(
        "'allow_self_signed' => false", "")
    assert "'cafile' => '/etc/qnprov/tls/ca.pem'" in text
    assert settings["language"] == "'vi_VN'"
    assert settings["plugins"] == ("['qnprov_clientip', 'password', 'managesieve', 'qnprov_sievepolicy', "
                                   "'qnprov_mobileconfig', 'qnprov_forcechange']")
    without = _php_settings(render("webmail/config.inc.php.j2", _variables(webmail_autoconfig_enabled=False)))
    assert without["plugins"] == ("['qnprov_clientip', 'password', 'managesieve', 'qnprov_sievepolicy', "
                                  "'qnprov_forcechange']")


def test_roundcube_sessions_are_hardened_and_show_no_version():
    settings = _php_settings(render("webmail/config.inc.php.j2", _variables(webmail_session_lifetime=15)))
    assert settings["use_https"] == "true"
    assert settings["session_samesite"] == "'Strict'"
    assert settings["session_lifetime"] == "15"
    assert settings["ip_check"] == "true"
    assert settings["useragent"] == "'Webmail'"
    assert settings["display_product_info"] == "0"
    assert settings["enable_installer"] == "false"
    assert settings["log_driver"] == "'syslog'" and settings["log_logins"] == "true"
    # Only plain addresses log in: no LDAP filter metacharacters reach the DN search.
    pattern = settings["login_username_filter"].strip("'").strip("/").rsplit("/", 1)[0]
    assert re.fullmatch(pattern, "annv@quangninh.test", re.I)
    for hostile in ("*@quangninh.test", "a)(mail=*@x", "annv@quangninh.test\\00", "annv"):
        assert not re.fullmatch(pattern, hostile, re.I), hostile


def test_php_strings_are_escaped():
    text = render("webmail/config.inc.php.j2", _variables(webmail_product_name="O'Brien \\ Mail",
                                                           webmail_des_key="abc'def\\ghijklmnopqrstu"))
    settings = _php_settings(text)
    assert settings["product_name"] == r"'O\'Brien \\ Mail'"
    assert settings["des_key"] == r"'abc\'def\\ghijklmnopqrstu'"


@pytest.mark.parametrize(("uri", "starttls"), [("ldap://127.0.0.1", "true"), ("ldaps://store1.example:636", "false")])
def test_password_plugin_uses_the_exop_as_the_user(uri: str, starttls: str):
    settings = _php_settings(render("webmail/password.config.inc.php.j2", _variables(webmail_ldap_uri=uri)))
    assert settings["password_driver"] == "'ldap_exop'"
    assert settings["password_ldap_method"] == "'user'"
    assert settings["password_ldap_host"] == f"'{uri}'"
    assert settings["password_ldap_starttls"] == starttls
    assert settings["password_confirm_current"] == "true"
    assert settings["password_ldap_search_filter"] == "'(&(objectClass=qnMailAccount)(mail=%login))'"


def test_managesieve_uses_starttls_with_a_verified_peer():
    text = render("webmail/managesieve.config.inc.php.j2", _variables())
    assert _php_settings(text)["managesieve_host"] == "'tls://127.0.0.1:4190'"
    assert "'verify_peer' => true" in text and "'cafile' => '/etc/qnprov/tls/ca.pem'" in text
    assert "'peer_name' => 'mail1.quangninh.test'" in text


def test_nginx_server_sends_the_security_headers_and_runs_only_the_front_controller():
    # The webmail's server block (the autoconfig server of issue 14 follows it).
    text = render("webmail/nginx-webmail.conf.j2", _variables()).split("\nserver {")[1]
    headers = dict(re.findall(r'^\s*add_header (\S+) "(.*)" always;$', text, re.M))
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["Referrer-Policy"] == "same-origin"
    csp = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'self'" and directives["object-src"] == "'none'"
    # What Roundcube 1.6 needs (its AJAX answers are eval()ed) and nothing from another origin.
    assert directives["script-src"] == "'self' 'unsafe-inline' 'unsafe-eval'"
    allowed = {"'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "data:", "blob:"}
    assert all(set(sources.split()) <= allowed for sources in directives.values()), directives
    # The two static files Roundcube's pages load outside the assets pattern, and only those.
    assert "location = /skins/elastic/watermark.html {" in text
    assert "location = /program/resources/blank.tiff {" in text
    assert text.count(".html {") == 1
    # Every add_header sits in the server block: one in a location would drop the others there.
    assert text.count("add_header") == len(headers) == 6
    # PHP runs for the front controller and (issue 14) the Autodiscover script only.
    assert text.count("fastcgi_pass") == 2
    assert "fastcgi_param SCRIPT_FILENAME $document_root/index.php;" in text
    assert "fastcgi_param SCRIPT_FILENAME /var/www/qnprov-autoconfig/autodiscover.php;" in text
    text = render("webmail/nginx-webmail.conf.j2", _variables())
    assert re.search(r'"POST:login" \$binary_remote_addr;', text)
    assert "rate=10r/m" in text and "burst=10 nodelay" in text
    assert "server_name mail1.quangninh.test;" in text


def test_mta_sts_nginx_includes_the_qnprov_servers_and_hides_its_version():
    text = render("mta_sts/nginx.conf.j2", {
        "mta_sts_domains": ["quangninh.test"], "mta_sts_listen_port": 443, "mta_sts_webroot": "/var/www/mta-sts",
        "mta_sts_tls_cert_file": "c", "mta_sts_tls_key_file": "k", "mta_sts_tls_protocols": ["TLSv1.2"],
        "mta_sts_tls_ciphers": "x"})
    assert "server_tokens off;" in text
    # At http level, after the MTA-STS servers: the last directive before http's closing brace.
    assert text.rstrip().endswith("include /etc/nginx/qnprov.d/*.conf;\n}")


def _failregex(text: str) -> re.Pattern[str]:
    line = re.search(r"^failregex = (.+)$", text, re.M).group(1)  # type: ignore[union-attr]
    # common.conf's __prefix_line, reduced to the journal backend's "HOST DAEMON[PID]: " form.
    line = line.replace("%(__prefix_line)s", r"\S+ roundcube\[\d+\]: ")
    return re.compile(line.replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))


def test_fail2ban_filter_finds_roundcubes_failed_login_line_and_its_address():
    text = render("webmail/fail2ban-filter.conf.j2", _variables())
    assert "journalmatch = SYSLOG_IDENTIFIER=roundcube" in text
    regex = _failregex(text)
    # As Roundcube 1.6 writes it to the journal, with its session prefix (log_session_id).
    prefix = "mail1.quangninh.test roundcube[54364]: "
    for line, host in (
            ("<7r1mggks> Failed login for annv@quangninh.test from 10.88.0.1 in session 7r1mggkso99d88gt (error: 0)",
             "10.88.0.1"),
            ("Failed login for annv@quangninh.test from 2001:db8::5 in session 5b1f0a2c3d4e5f60 (error: -1)",
             "2001:db8::5"),
            # A typed user name that imitates the line cannot frame another address.
            ("<abc> Failed login for x from 6.6.6.6 in session a (error: 0) from 10.88.0.7 in session b1 (error: 0)",
             "10.88.0.7")):
        found = regex.search(prefix + line)
        assert found and found.group("host") == host, line
    # The IMAP error line of the same failure names the same address; it must not count twice.
    assert not regex.search(prefix + "<7r1mggks> IMAP Error: Login failed for annv@quangninh.test against "
                            "mail1.quangninh.test from 10.88.0.1. AUTHENTICATE PLAIN: Authentication failed. "
                            "in /usr/share/x.php on line 2")
    assert not regex.search(prefix + "Successful login for annv@quangninh.test (ID: 1) from 10.88.0.1 in session 5b1f")
    jail = render("webmail/fail2ban-jail.local.j2", _variables())
    assert "[qnprov-webmail]" in jail and "filter = qnprov-webmail" in jail and "port = 443" in jail


def test_forced_change_plugin_renders_to_valid_php_that_holds_no_secret(tmp_path):
    """Issue 14: the login task's plugin reads the directory settings from the password plugin's
    root:www-data 0640 file at run time, so the world-readable plugin carries no password; it
    asks slapo-ppolicy (bind as the user with the policy control) and refuses a bare ldap://."""
    import shutil
    import subprocess

    variables = _variables()
    text = render("webmail/qnprov_forcechange.php.j2", variables)
    assert shutil.which("php-cgi"), "php-cgi is not installed (run scripts/bootstrap.sh)"
    plugin = tmp_path / "qnprov_forcechange.php"
    plugin.write_text(text, encoding="utf-8")
    lint = subprocess.run(["php-cgi", "-l", str(plugin)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert variables["webmail_ldap_search_password"] not in text and variables["webmail_des_key"] not in text
    assert "private const LDAP_CONFIG = '/etc/roundcube/plugins/password/config.inc.php';" in text
    assert "public $task = 'login';" in text
    # Must-change is the directory's answer to the user's own bind, nothing the page can be told.
    assert "ldap_bind_ext($ld, $dn, $password, [['oid' => LDAP_CONTROL_PASSWORDPOLICYREQUEST]])" in text
    assert "return ($policy['error'] ?? null) === 2;  // changeAfterReset" in text
    assert "$rcmail->check_request(rcube_utils::INPUT_POST)" in text
    assert "!str_starts_with($uri, 'ldaps://') && !($starttls && str_starts_with($uri, 'ldap://'))" in text


# --- qnprov_clientip: the browser's address in the IMAP ID, under the real PHP ------------------
# Roundcube is not on this machine: a stand-in rcube_plugin records the hook, and the plugin's
# own handler runs on the args Roundcube's storage_connect hook passes (ident included).
# tests/integration/test_webmail_clientip_lab.py drives it in the real Roundcube and Dovecot.

_CLIENTIP_HARNESS = """<?php
class rcube_plugin { public $hooks = []; public function add_hook($h, $c) { $this->hooks[$h] = $c; } }
require getenv('QN_PLUGIN');
$_SERVER = json_decode(getenv('QN_SERVER'), true);
$plugin = new qnprov_clientip();
$plugin->init();
$args = ['host' => '127.0.0.1', 'user' => 'annv@quangninh.test', 'attempt' => 1,
         'ident' => ['name' => 'Roundcube', 'version' => '1.6.5'], 'preauth_ident' => ['x-session-ext-id' => 'k']];
$args = call_user_func($plugin->hooks['storage_connect'], $args);
echo json_encode(['hooks' => array_keys($plugin->hooks), 'args' => $args]);
"""


def _clientip(tmp_path, server: dict[str, str]) -> dict[str, Any]:
    import json
    import os
    import shutil
    import subprocess

    assert shutil.which("php"), "php is not installed (run scripts/bootstrap.sh)"
    plugin = tmp_path / "qnprov_clientip.php"
    plugin.write_text(render("webmail/qnprov_clientip.php.j2", _variables()), encoding="utf-8")
    lint = subprocess.run(["php", "-l", str(plugin)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    harness = tmp_path / "harness.php"
    harness.write_text(_CLIENTIP_HARNESS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QN_PLUGIN": str(plugin), "QN_SERVER": json.dumps(server)}
    proc = subprocess.run(["php", "-d", "display_errors=stderr", str(harness)], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(("server", "ident"), [
    # nginx's $remote_addr and $remote_port (fastcgi_params), IPv4 and IPv6.
    ({"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "51234"},
     {"x-originating-ip": "203.0.113.7", "x-originating-port": "51234"}),
    ({"REMOTE_ADDR": "2001:db8::5", "REMOTE_PORT": "443"}, {"x-originating-ip": "2001:db8::5",
                                                             "x-originating-port": "443"}),
    # A client's own headers are never read: the TCP peer is what goes to Dovecot.
    ({"REMOTE_ADDR": "198.51.100.9", "REMOTE_PORT": "40000", "HTTP_X_FORWARDED_FOR": "6.6.6.6",
      "HTTP_X_REAL_IP": "6.6.6.6", "HTTP_CLIENT_IP": "6.6.6.6"},
     {"x-originating-ip": "198.51.100.9", "x-originating-port": "40000"}),
    # A port that is not one is left out; the address still goes.
    ({"REMOTE_ADDR": "198.51.100.9", "REMOTE_PORT": "99999"}, {"x-originating-ip": "198.51.100.9"}),
    ({"REMOTE_ADDR": "198.51.100.9", "REMOTE_PORT": "12a"}, {"x-originating-ip": "198.51.100.9"}),
    # No address, or something else in REMOTE_ADDR: nothing is forwarded (Dovecot sees 127.0.0.1).
    ({}, {}),
    ({"REMOTE_ADDR": "6.6.6.6\r\nx-originating-ip 1.2.3.4", "REMOTE_PORT": "1"}, {}),
    ({"REMOTE_ADDR": "unix:", "REMOTE_PORT": "1"}, {}),
])
def test_clientip_plugin_puts_nginxs_remote_addr_into_the_imap_id(tmp_path, server: dict[str, str],
                                                                   ident: dict[str, str]) -> None:
    result = _clientip(tmp_path, server)
    assert result["hooks"] == ["storage_connect"]
    args = result["args"]
    # Before authentication (Roundcube 1.6's preauth_ident; its 'ident' goes after the login, when
    # Dovecot no longer takes the fields). Other fields stay, the connection's other arguments too.
    assert args["preauth_ident"] == {"x-session-ext-id": "k", **ident}
    assert {k: v for k, v in args.items() if k != "preauth_ident"} == {
        "host": "127.0.0.1", "user": "annv@quangninh.test", "attempt": 1,
        "ident": {"name": "Roundcube", "version": "1.6.5"}}


def test_clientip_plugin_is_installed_checked_against_rcube_plugin_before_the_config_loads_it() -> None:
    # One qnprov_files list (issue 15): installed in order, each validated before it goes live.
    tasks = yaml.safe_load((ROLE / "tasks" / "config.yml").read_text())
    files = [(task["qnprov_files"], entry) for task in tasks if "qnprov_files" in task
             for entry in task["qnprov_files"]["files"]]
    dests = [entry["dest"] for _, entry in files]
    defaults, plugin = next((d, e) for d, e in files
                            if e["dest"] == "{{ __webmail_clientip_plugin_dir }}/qnprov_clientip.php")
    assert plugin.get("mode", defaults["mode"]) == "0644" and plugin.get("owner", defaults["owner"]) == "root"
    assert 'require "{{ __webmail_rcube_plugin_class }}"' in plugin["validate"]
    assert 'class_exists("qnprov_clientip", false)' in plugin["validate"]
    config = next(e for _, e in files if e["dest"] == "/etc/roundcube/config.inc.php")
    assert config["validate"] == "/usr/bin/php -l %s"
    assert dests.index(plugin["dest"]) < dests.index("/etc/roundcube/config.inc.php")


def _ignoreregex(text: str) -> re.Pattern[str]:
    return re.compile(re.search(r"^ignoreregex = (.+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_dovecot_jail_ignores_the_webmails_loopback_logins_counted_by_the_webmail_jail() -> None:
    """A wrong webmail password is counted once, by qnprov-webmail (its Roundcube line); Dovecot's
    line of the same failure now names the browser in rip= but came in on loopback (lip=)."""
    text = render("webmail/fail2ban-dovecot-filter.local.j2", _variables())
    assert text.count("[Definition]") == 1 and "failregex" not in text
    regex = _ignoreregex(text)
    prefix = "mail1.quangninh.test dovecot[812]: imap-login: Disconnected: Connection closed (auth failed, 1 attempts "
    for lip, ignored in (("127.0.0.1", True), ("::1", True), ("127.0.0.53", True),
                         ("203.0.113.1", False), ("10.88.0.5", False), ("1127.0.0.1", False), ("::10", False)):
        line = prefix + (f"in 2 secs): user=<annv@quangninh.test>, method=PLAIN, rip=10.88.0.1, lip={lip}, TLS, "
                         "session=<x>")
        assert bool(regex.search(line)) == ignored, line
    # The successful login's line has mpid= and more; a failure's may end "TLS: Connection closed".
    assert regex.search("dovecot[812]: imap-login: Login: user=<a@quangninh.test>, method=PLAIN, rip=10.88.0.1, "
                        "lip=127.0.0.1, mpid=56531, TLS, session=<uPM91gxivrYKWAAB>")
    assert regex.search(prefix + "in 2 secs): user=<a@quangninh.test>, method=PLAIN, rip=10.88.0.1, lip=127.0.0.1, "
                                 "TLS: Connection closed, session=<XORHEQ1iUIoKWAAB>")
    # A direct client naming loopback in its user name cannot hide its failure (Dovecot logs the
    # typed name as is; this one is a real line of the lab, AUTHENTICATE PLAIN with that name).
    for user in ("lip=127.0.0.1", "x>, method=PLAIN, rip=10.1.1.1, lip=127.0.0.1, TLS <y@quangninh.test",
                 "x, lip=127.0.0.1, session=<a>", "x>, method=PLAIN, rip=1.1.1.1, lip=::1, session=<a"):
        line = (prefix + f"in 2 secs): user=<{user}>, method=PLAIN, rip=10.88.0.1, lip=10.88.0.196, "
                "TLS: Connection closed, session=<XORHEQ1iUIoKWAAB>")
        assert not regex.search(line), line
    tasks = yaml.safe_load((ROLE / "tasks" / "config.yml").read_text())
    fail2ban = next(task for task in tasks if task["name"].startswith("Write the fail2ban filter and jail"))
    dovecot = next(entry for entry in fail2ban["qnprov_files"]["files"]
                   if entry["src"] == "{{ webmail_templates_dir }}/fail2ban-dovecot-filter.local.j2")
    assert dovecot["dest"] == "/etc/fail2ban/filter.d/dovecot.local"
    assert dovecot["validate"] == "/usr/local/sbin/qnprov-fail2ban-configtest filter.d/dovecot.local %s"
