"""The Postfix and Dovecot templates render with plain Jinja2 and Postfix accepts the result.

pyinfra renders the same files as the Ansible roles, so they may use only
Jinja2 built-ins. The rendered Postfix set (main.cf, master.cf, LDAP maps) is
checked by the real postconf/postfix binaries on this machine, the same
checks the role runs on the host before publishing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from qnprov import paths
from qnprov.policy import forwarding
from qnprov_testing.template_vars import lab_shared

# The shared fixture (tests/conftest.py): Postfix tools with a private config_directory.
PostfixTool = Callable[..., subprocess.CompletedProcess[str]]
NO_MATCH = (1, "", "")  # postmap -q found nothing; a fatal error also exits 1, but says why on stderr

TEMPLATES = paths.PROJECT_ROOT / "templates"
ROLES = paths.PROJECT_ROOT / "roles"
LDAP_MAPS = yaml.safe_load((ROLES / "postfix" / "vars" / "main.yml").read_text())["__postfix_ldap_maps_base"]

# What the inventory provides for the defaults' "{{ qnprov_* }}" references.
SHARED = lab_shared(ansible_facts={"fqdn": "mail1.quangninh.test"}, group_names=["mail_all", "directory", "mta"])


def _environment(directory: Path) -> jinja2.Environment:
    # Ansible's template module defaults: trim_blocks on, lstrip_blocks off.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, keep_trailing_newline=True, autoescape=False)  # noqa: S701


def _role_variables(role: str, shared: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The role's defaults with their "{{ qnprov_* }}" references resolved, as Ansible would."""
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    resolver = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701
    context = {**SHARED, **(shared or {})}
    resolved: dict[str, Any] = {}
    for name, value in defaults.items():
        resolved[name] = resolver.from_string(value).render(context) if isinstance(value, str) else value
    # Ansible keeps "{{ qnprov_stores | default([]) }}" a list (native types); this string resolver
    # would make it the string "[]". No stores here: test_store_templates.py renders them.
    for name in ("postfix_mail_stores", "dovecot_mail_stores"):
        if resolved.get(name) == "[]":
            resolved[name] = []
    resolved.update(overrides)
    return resolved


def _render_postfix(target: Path, **overrides: Any) -> None:
    """The files roles/postfix stages (tasks/config.yml, vars/main.yml), rendered the same way."""
    # "{{ qnprov_stores | default([]) }}" is an empty list in Ansible (native types), not the
    # string "[]" this string-only resolver would make; stores are tested in test_store_templates.py.
    overrides.setdefault("postfix_mail_stores", [])
    variables = _role_variables("postfix", **overrides)
    enabled = variables["postfix_qnprov_policy_enabled"]
    # What the role's controller task registers (python -m qnprov policy freemail postfix-tables).
    domains = forwarding.freemail_domains(variables["postfix_qnprov_freemail_extra_domains"])
    variables["__postfix_qnprov_tables"] = forwarding.postfix_tables(domains) if enabled else {}
    env = _environment(TEMPLATES / "postfix")
    (target / "ldap").mkdir(parents=True)
    files = ["main.cf", "master.cf", "tls_policy", "header_checks", "role_addresses"]
    files += ["freemail_recipient.regexp"] if enabled else []
    for name in files:
        (target / name).write_text(env.get_template(f"{name}.j2").render(variables))
    for name in LDAP_MAPS + (["forward_info"] if enabled else []):
        (target / "ldap" / f"{name}.cf").write_text(env.get_template(f"ldap/{name}.cf.j2").render(variables))


def test_postfix_defaults_render_and_pass_postconf_without_warnings(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(tmp_path)
    result = postfix_tool("postconf", "-c", str(tmp_path), "-n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    settings = {name: value.strip() for name, _, value in (line.partition(" =") for line in result.stdout.splitlines())}
    assert settings["smtpd_tls_auth_only"] == "yes"
    assert settings["smtpd_sasl_auth_enable"] == "no"
    assert settings["mynetworks"] == "127.0.0.0/8 [::1]/128"
    assert settings["milter_default_action"] == "tempfail"
    assert settings["smtpd_milters"] == "unix:/run/qnprov/milter.sock"
    assert settings["non_smtpd_milters"] == "unix:/run/qnprov/milter.sock"
    # Issue 9 item 2: Dovecot 2.3's LMTP has no SMTPUTF8, so it is never offered (nor autodetected),
    # and 8-bit envelope addresses are refused on port 25 and on submission, sender and recipient.
    assert settings["smtputf8_enable"] == "no"
    check = "$qnprov_non_ascii_address"
    assert settings["smtpd_sender_restrictions"].startswith(f"check_sender_access {check},")
    assert settings["mua_sender_restrictions"].startswith(f"check_sender_access {check},")
    for name in ("smtpd_recipient_restrictions", "mua_recipient_restrictions"):
        assert f"check_recipient_access {check}, reject_non_fqdn_recipient" in settings[name]
    table = settings["qnprov_non_ascii_address"]
    refused = postfix_tool("postmap", "-c", str(tmp_path), "-q", "nguyễn.văn.ạ@quangninh.test", table)
    assert refused.stdout.strip() == "553 5.6.7 Non-ASCII address: this server does not support SMTPUTF8"
    ascii_ok = postfix_tool("postmap", "-c", str(tmp_path), "-q", "nguyen.van.a@quangninh.test", table)
    assert (ascii_ok.returncode, ascii_ok.stdout, ascii_ok.stderr) == (1, "", "")


def test_postfix_staged_set_passes_postfix_check(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(tmp_path)
    result = postfix_tool("postfix", "-c", str(tmp_path), "check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_postfix_sasl_is_enabled_only_on_the_submission_listeners(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(tmp_path)
    result = postfix_tool("postconf", "-c", str(tmp_path), "-P")
    overrides = result.stdout.splitlines()
    sasl_on = sorted(line.split("/", 1)[0] for line in overrides if line.endswith("smtpd_sasl_auth_enable = yes"))
    assert sasl_on == ["submission", "submissions"]
    assert "submission/inet/smtpd_tls_security_level = encrypt" in overrides
    assert "submissions/inet/smtpd_tls_wrappermode = yes" in overrides


def test_postfix_milters_and_an_extra_listener_are_wired_and_valid(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(
        tmp_path,
        postfix_qnprov_policy_enabled=False,
        postfix_milters=["inet:127.0.0.1:11332", "unix:/run/qnprov-milter/milter.sock"],
        postfix_non_smtpd_milters=["inet:127.0.0.1:11332"],
        postfix_main_cf_extra={"reinject_recipient_restrictions": "permit_mynetworks, reject"},
        postfix_master_cf_extra=[{
            "service": "127.0.0.1:10026", "type": "inet", "command": "smtpd",
            "options": ["syslog_name=postfix/reinject",
                        "smtpd_recipient_restrictions=$reinject_recipient_restrictions"]}],
    )
    result = postfix_tool("postconf", "-c", str(tmp_path), "-n", "smtpd_milters", "non_smtpd_milters")
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "smtpd_milters = inet:127.0.0.1:11332, unix:/run/qnprov-milter/milter.sock",
        "non_smtpd_milters = inet:127.0.0.1:11332",
    ]
    private = postfix_tool("postconf", "-c", str(tmp_path), "-Fh", "*/inet/private")
    assert set(private.stdout.split()) == {"n"}, "an inet service marked private stops master(8)"


def test_postfix_policy_wiring_milter_reinject_listener_and_forward_checks(
    tmp_path: Path, postfix_tool: PostfixTool
) -> None:
    """Clause 1.3(2) and the milter, as the role deploys them by default (postfix_qnprov_policy_enabled)."""
    _render_postfix(tmp_path, postfix_milters=["inet:127.0.0.1:11332"])
    result = postfix_tool("postconf", "-c", str(tmp_path), "-n")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    settings = {name: value.strip() for name, _, value in (line.partition(" =") for line in result.stdout.splitlines())}
    # The policy first (its verdict does not wait for greylisting), then rspamd.
    assert settings["smtpd_milters"] == "unix:/run/qnprov/milter.sock, inet:127.0.0.1:11332"
    forward_info = "check_recipient_access ldap:${config_directory}/ldap/forward_info.cf"
    assert settings["smtpd_recipient_restrictions"].startswith(forward_info)
    assert settings["mua_recipient_restrictions"].startswith(forward_info)
    assert "regexp:${config_directory}/freemail_recipient.regexp" in settings["qnprov_reinject_recipient_restrictions"]
    assert settings["header_checks"] == "regexp:${config_directory}/header_checks"
    listener = postfix_tool("postconf", "-c", str(tmp_path), "-P", "127.0.0.1:10027/inet/*").stdout.splitlines()
    assert "127.0.0.1:10027/inet/syslog_name = postfix/reinject" in listener
    assert "127.0.0.1:10027/inet/milter_macro_daemon_name = reinject" in listener
    assert "127.0.0.1:10027/inet/smtpd_recipient_restrictions = $qnprov_reinject_recipient_restrictions" in listener
    assert "127.0.0.1:10027/inet/smtpd_sasl_auth_enable = no" in listener
    check = postfix_tool("postfix", "-c", str(tmp_path), "check")
    assert check.returncode == 0 and check.stderr == "", check.stderr
    # A forged verdict header from outside is dropped; ordinary headers are untouched.
    table = f"regexp:{tmp_path / 'header_checks'}"
    assert postfix_tool("postmap", "-q", "X-QN-Signature: valid", table).stdout.strip() == "IGNORE"
    assert postfix_tool("postmap", "-q", "x-qn-policy: accept", table).stdout.strip() == "IGNORE"
    missed = postfix_tool("postmap", "-q", "X-Mailer: QN-Client", table)
    assert (missed.returncode, missed.stdout, missed.stderr) == NO_MATCH, missed
    # The re-injection check refuses free mail, citing the clause; the forward log only informs.
    freemail = f"regexp:{tmp_path / 'freemail_recipient.regexp'}"
    refused = postfix_tool("postmap", "-q", "canbo@Gmail.com", freemail)
    assert refused.stdout.startswith("550 5.7.1 ") and "1.3(2)" in refused.stdout
    allowed = postfix_tool("postmap", "-q", "canbo@quangninh.gov.vn", freemail)
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == NO_MATCH, allowed
    info = (tmp_path / "ldap" / "forward_info.cf").read_text()
    assert "result_format = INFO qnprov 1.3(2): free-mail forward of %s suppressed" in info
    assert "bind_dn = cn=postfix,ou=services,dc=quangninh,dc=test" in info
    # The forwards map never expands an entry with a free-mail forward.
    forwards = (tmp_path / "ldap" / "virtual_forwards.cf").read_text()
    filter_line = next(line for line in forwards.splitlines() if line.startswith("query_filter = "))
    assert filter_line.startswith("query_filter = (&(objectClass=qnMailAccount)(mail=%s)(qnAccountStatus=active)"
                                  "(qnMailForward=*)(!(|")
    assert "(qnMailForward=*@gmail.com)(qnMailForward=*.gmail.com)(qnMailForward=*@gmail.com.)" in filter_line
    assert filter_line.count("(") == filter_line.count(")")


def test_postfix_policy_wiring_is_absent_when_disabled(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(tmp_path, postfix_qnprov_policy_enabled=False)
    main_cf = (tmp_path / "main.cf").read_text()
    settings = postfix_tool("postconf", "-c", str(tmp_path), "-n").stdout
    assert "milter.sock" not in settings and "qnprov_reinject" not in settings and "forward_info" not in settings
    assert "10027" not in (tmp_path / "master.cf").read_text()
    assert "gmail" not in (tmp_path / "ldap" / "virtual_forwards.cf").read_text()
    assert "header_checks" not in main_cf


def test_postfix_role_addresses_of_every_hosted_domain(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(tmp_path, postfix_role_address_recipient="quantri@quangninh.test",
                    postfix_hosted_domains=["quangninh.test", "skhcn.quangninh.test"])
    result = postfix_tool("postconf", "-c", str(tmp_path), "-h", "virtual_alias_maps")
    assert result.stdout.startswith("texthash:${config_directory}/role_addresses,"), result.stdout
    table = f"texthash:{tmp_path / 'role_addresses'}"
    for address in ("postmaster@quangninh.test", "abuse@skhcn.quangninh.test"):
        assert postfix_tool("postmap", "-q", address, table).stdout.strip() == "quantri@quangninh.test", address
    missed = postfix_tool("postmap", "-q", "hostmaster@quangninh.test", table)
    assert (missed.returncode, missed.stdout, missed.stderr) == NO_MATCH, missed


def test_postfix_without_a_role_address_recipient_has_no_role_table(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    _render_postfix(tmp_path)
    result = postfix_tool("postconf", "-c", str(tmp_path), "-h", "virtual_alias_maps")
    assert "role_addresses" not in result.stdout


def test_postfix_rejects_a_misspelt_extra_parameter(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    """The role's postconf gate treats this warning as an error."""
    _render_postfix(tmp_path, postfix_main_cf_extra={"smtpd_tls_auth_onyl": "yes"})
    result = postfix_tool("postconf", "-c", str(tmp_path), "-n")
    assert "unused parameter: smtpd_tls_auth_onyl=yes" in result.stderr


def test_postfix_ldap_maps_hold_the_design_filters(tmp_path: Path) -> None:
    _render_postfix(tmp_path)
    maps = {name: (tmp_path / "ldap" / f"{name}.cf").read_text() for name in LDAP_MAPS}
    assert "query_filter = (associatedDomain=%s)" in maps["virtual_domains"]
    assert "(&(objectClass=qnMailAccount)(mail=%s)(qnAccountStatus=active))" in maps["virtual_mailboxes"]
    assert "special_result_attribute = member" in maps["virtual_groups"]
    for name, text in maps.items():
        assert "start_tls = yes" in text, name
        assert "tls_require_cert = yes" in text, name
        assert "bind_dn = cn=postfix,ou=services,dc=quangninh,dc=test" in text, name
        assert "version = 3" in text, name


@pytest.mark.parametrize("reinject", ["smtp", "sendmail"])
def test_dovecot_templates_render_with_plain_jinja(reinject: str) -> None:
    variables = _role_variables("dovecot", dovecot_sieve_reinject=reinject, dovecot_mail_stores=[],
                                dovecot_postfix_sockets=True)
    env = _environment(TEMPLATES / "dovecot")
    conf = env.get_template("dovecot.conf.j2").render(variables)
    assert "\nprotocols = imap lmtp sieve\n" in conf
    assert "\nssl = required\n" in conf
    assert "\ndisable_plaintext_auth = yes\n" in conf
    assert "\nlogin_trusted_networks = \n" in conf
    assert ("submission_host = 127.0.0.1:10027" in conf) == (reinject == "smtp")
    assert ("sendmail_path = /usr/sbin/sendmail" in conf) == (reinject == "sendmail")
    passdb = env.get_template("dovecot-ldap-passdb.conf.ext.j2").render(variables)
    assert "auth_bind = yes" in passdb
    assert ("pass_filter = (&(objectClass=qnMailAccount)(mail=%u)(qnAccountStatus=active)"
            "(qnEnabledService=imap))") in passdb
    quota = env.get_template("dovecot-ldap-userdb-quota.conf.ext.j2").render(variables)
    assert "(qnMailQuota>=1))" in quota


def _postfix_map_variables(shared: dict[str, Any] | None = None) -> dict[str, Any]:
    variables = _role_variables("postfix", shared=shared)
    domains = forwarding.freemail_domains(variables["postfix_qnprov_freemail_extra_domains"])
    variables["__postfix_qnprov_tables"] = forwarding.postfix_tables(domains)
    return variables


def _ldap_lines(text: str) -> dict[str, str]:
    return {name.strip(): value.strip() for name, sep, value in (line.partition("=") for line in text.splitlines())
            if sep and not name.startswith("#")}


def test_one_ldap_uri_renders_as_before() -> None:
    """The all-in-one lab (qnprov_ldap_uri only): one server, StartTLS, as before issue 10."""
    postfix = _postfix_map_variables()
    for name in LDAP_MAPS:
        text = _environment(TEMPLATES / "postfix").get_template(f"ldap/{name}.cf.j2").render(postfix)
        lines = _ldap_lines(text)
        assert (lines["server_host"], lines["start_tls"], lines["tls_require_cert"]) == (
            "ldap://127.0.0.1", "yes", "yes"), name
    dovecot = _role_variables("dovecot")
    for name in ("passdb", "userdb", "userdb-quota"):
        text = _environment(TEMPLATES / "dovecot").get_template(f"dovecot-ldap-{name}.conf.ext.j2").render(dovecot)
        lines = _ldap_lines(text)
        assert (lines["uris"], lines["tls"], lines["tls_require_cert"]) == ("ldap://127.0.0.1", "yes", "hard")


def test_every_provider_is_listed_and_ldaps_gets_no_starttls(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    """qnprov_ldap_uris (issue 10): both providers, in order, over ldaps with the CA checked."""
    uris = {"qnprov_ldap_uris": ["ldaps://ldap1.quangninh.test", "ldaps://ldap2.quangninh.test"]}
    postfix = _postfix_map_variables(uris)
    for name in LDAP_MAPS:
        text = _environment(TEMPLATES / "postfix").get_template(f"ldap/{name}.cf.j2").render(postfix)
        lines = _ldap_lines(text)
        assert lines["server_host"] == "ldaps://ldap1.quangninh.test ldaps://ldap2.quangninh.test"
        assert (lines["start_tls"], lines["tls_require_cert"], lines["tls_ca_cert_file"]) == (
            "no", "yes", "/etc/qnprov/tls/ca.pem")
    # Postfix itself accepts the staged set with the two-provider maps.
    _render_postfix(tmp_path / "staged", **{"postfix_ldap_uri": postfix["postfix_ldap_uri"]})
    check = postfix_tool("postconf", "-c", str(tmp_path / "staged"), "-n")
    assert check.returncode == 0 and check.stderr == "", check.stderr
    dovecot = _role_variables("dovecot", shared=uris)
    for name in ("passdb", "userdb", "userdb-quota"):
        text = _environment(TEMPLATES / "dovecot").get_template(f"dovecot-ldap-{name}.conf.ext.j2").render(dovecot)
        lines = _ldap_lines(text)
        assert lines["uris"] == "ldaps://ldap1.quangninh.test ldaps://ldap2.quangninh.test"
        assert (lines["tls"], lines["tls_require_cert"], lines["tls_ca_cert_file"]) == (
            "no", "hard", "/etc/qnprov/tls/ca.pem")


def test_dovecot_refuses_accounts_that_must_change_their_password_first() -> None:
    """Issue 14: a first passdb finds only pwdReset=TRUE accounts and answers nologin with the reason."""
    variables = _role_variables("dovecot", dovecot_mail_stores=[], dovecot_postfix_sockets=True,
                                ansible_facts={"fqdn": "mail1.quangninh.test"})
    env = _environment(TEMPLATES / "dovecot")
    conf = env.get_template("dovecot.conf.j2").render(variables)
    pwreset_at = conf.index("args = /etc/dovecot/dovecot-ldap-passdb-pwreset.conf.ext")
    local_at = conf.index("args = /etc/dovecot/dovecot-ldap-passdb.conf.ext")
    assert pwreset_at < local_at
    block = conf[pwreset_at:conf.index("}", pwreset_at)]
    # return-fail: Postfix (a SASL client) must see a failure, not a success with nologin.
    assert "result_success = return-fail" in block and "result_failure = continue" in block
    assert "result_internalfail = return-fail" in block
    lines = env.get_template("dovecot-ldap-passdb-pwreset.conf.ext.j2").render(variables).splitlines()
    assert "auth_bind = yes" in lines
    assert ("pass_filter = (&(&(objectClass=qnMailAccount)(mail=%u)(qnAccountStatus=active)"
            "(qnEnabledService=imap))(pwdReset=TRUE))") in lines
    assert ("pass_attrs = mail=user, =nologin=y, =reason=Your initial password must be changed before you can "
            "use mail. Change it at https://mail1.quangninh.test/") in lines
    assert "tls_require_cert = hard" in lines


@pytest.mark.parametrize(("groups", "webmail_enabled", "operator", "expected"), [
    # No webmail on the host: nobody is trusted (QN-DOV-08), as before.
    (["mail_all", "mta"], True, [], ""),
    (["mail_all", "store"], True, [], ""),
    # A webmail host: loopback only, for Roundcube's x-originating-ip (roles/webmail qnprov_clientip).
    (["mail_all", "mta", "webmail"], True, [], "127.0.0.1/32 ::1/128"),
    # The webmail switched off there: nothing.
    (["mail_all", "mta", "webmail"], False, [], ""),
    # The operator's own networks are kept, loopback added once.
    (["mail_all", "mta", "webmail"], True, ["10.0.0.0/24", "127.0.0.1/32"], "10.0.0.0/24 127.0.0.1/32 ::1/128"),
    (["mail_all", "mta"], True, ["10.0.0.0/24"], "10.0.0.0/24"),
])
def test_dovecot_trusts_loopback_only_on_a_webmail_host(groups: list[str], webmail_enabled: bool,
                                                        operator: list[str], expected: str) -> None:
    variables = _role_variables("dovecot", {"group_names": groups, "webmail_enabled": webmail_enabled},
                                dovecot_mail_stores=[], dovecot_sieve_reinject="smtp", dovecot_postfix_sockets=True,
                                dovecot_login_trusted_networks=operator)
    conf = _environment(TEMPLATES / "dovecot").get_template("dovecot.conf.j2").render(variables)
    assert f"\nlogin_trusted_networks = {expected}\n" in conf
