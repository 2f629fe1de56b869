"""Mail stores (issue 10) in the Postfix and Dovecot templates.

The templates are rendered with plain Jinja2 as Ansible would (role defaults whose
"{{ ... }}" references resolve to native values, the lab's shared variables), then:

- with the lab's variables (no ``qnprov_stores``) nothing store-related appears, and the
  files are exactly what the roles rendered before stores existed;
- with stores, the real postconf/postfix check accept the set, the real postmap answers
  the transport map from a real slapd, and the LMTP status filter turns a routing failure
  into a deferral.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes
import jinja2.sandbox
import pytest
import yaml

from qnprov import paths
from qnprov.policy import forwarding
from qnprov_testing.slapd import TestSlapd, running_test_slapd
from qnprov_testing.template_vars import lab_shared

PostfixTool = Callable[..., subprocess.CompletedProcess[str]]
TEMPLATES = paths.PROJECT_ROOT / "templates"
ROLES = paths.PROJECT_ROOT / "roles"
POSTFIX_VARS = yaml.safe_load((ROLES / "postfix" / "vars" / "main.yml").read_text())
STORES = [{"name": "store1.quangninh.test", "replica": "store2.quangninh.test"},
          {"name": "store2.quangninh.test", "replica": "store1.quangninh.test"}]

# The shared variables of inventories/lab (literal ones; the secrets are lookups there).
SHARED: dict[str, Any] = lab_shared(
    ansible_facts={"fqdn": "mail1.quangninh.test", "all_ipv4_addresses": ["10.89.7.11"], "all_ipv6_addresses": []},
    inventory_hostname="mail1", group_names=["mail_all", "directory", "mta", "store"])


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, keep_trailing_newline=True, autoescape=False)  # noqa: S701


def _native() -> jinja2.nativetypes.NativeEnvironment:
    """Ansible's native templating, with the one Ansible filter the role variables use."""
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).lower() in ("yes", "true", "1")
    return env


def role_variables(role: str, shared: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Defaults resolved as Ansible does: "{{ x }}" becomes x's native value (a list stays a list).

    Defaults may refer to each other, so resolution repeats until nothing changes.
    """
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    # Inventory variables override role defaults, as in Ansible.
    context: dict[str, Any] = {**defaults, **(shared if shared is not None else SHARED), **overrides}
    native = _native()
    for _ in range(5):
        changed = False
        for name, value in list(context.items()):
            if name in overrides or not isinstance(value, str) or "{{" not in value:
                continue
            try:
                context[name] = native.from_string(value).render(context)
                changed = True
            except jinja2.UndefinedError:
                continue
        if not changed:
            break
    return context


def render_postfix(target: Path, **overrides: Any) -> dict[str, Any]:
    variables = role_variables("postfix", **overrides)
    enabled = variables["postfix_qnprov_policy_enabled"]
    domains = forwarding.freemail_domains(variables["postfix_qnprov_freemail_extra_domains"])
    variables["__postfix_qnprov_tables"] = forwarding.postfix_tables(domains) if enabled else {}
    native = _native()
    maps = native.from_string(POSTFIX_VARS["__postfix_ldap_maps"]).render(
        {**variables, "__postfix_ldap_maps_base": POSTFIX_VARS["__postfix_ldap_maps_base"]})
    files = native.from_string(POSTFIX_VARS["__postfix_config_files"]).render(variables)
    env = _environment(TEMPLATES / "postfix")
    (target / "ldap").mkdir(parents=True)
    for name in files:
        (target / name).write_text(env.get_template(f"{name}.j2").render(variables))
    for name in maps:
        (target / "ldap" / f"{name}.cf").write_text(env.get_template(f"ldap/{name}.cf.j2").render(variables))
    return {"maps": maps, "files": files}


def _settings(postfix_tool: PostfixTool, directory: Path) -> dict[str, str]:
    result = postfix_tool("postconf", "-c", str(directory), "-n")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return {name: value.strip() for name, _, value in (line.partition(" =") for line in result.stdout.splitlines())}


# --- Postfix -------------------------------------------------------------------------------


def test_postfix_without_stores_has_no_store_routing(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    rendered = render_postfix(tmp_path)
    assert "transport" not in rendered["maps"] and "lmtp_status_filter" not in rendered["files"]
    settings = _settings(postfix_tool, tmp_path)
    for name in ("transport_maps", "lmtp_host_lookup", "lmtp_delivery_status_filter", "lmtp_connect_timeout"):
        assert name not in settings, name
    assert settings["virtual_transport"] == "lmtp:unix:private/dovecot-lmtp"


def test_postfix_with_stores_passes_postconf_and_postfix_check(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    rendered = render_postfix(tmp_path, postfix_mail_stores=STORES)
    assert "transport" in rendered["maps"] and "lmtp_status_filter" in rendered["files"]
    settings = _settings(postfix_tool, tmp_path)
    assert settings["transport_maps"] == "ldap:${config_directory}/ldap/transport.cf"
    assert settings["lmtp_host_lookup"] == "native"
    assert settings["lmtp_connect_timeout"] == "10s"
    assert settings["lmtp_delivery_status_filter"] == "regexp:${config_directory}/lmtp_status_filter"
    assert settings["virtual_transport"] == "lmtp:unix:private/dovecot-lmtp"  # accounts without qnMailHost
    check = postfix_tool("postfix", "-c", str(tmp_path), "check")
    assert check.returncode == 0 and check.stderr == "", check.stderr


@pytest.mark.parametrize(("status", "expected"), [
    # lmtp(8) for a store name that does not resolve (smtp_addr.c: EAI_NONAME is 5.4.4)
    ("5.4.4 Host or domain name not found. Name service error for name=store1.quangninh.test type=A: "
     "Host not found", "4.4.4 Host or domain name not found. Name service error for "
     "name=store1.quangninh.test type=A: Host not found"),
    ("5.4.6 mail for store1.quangninh.test loops back to myself",
     "4.4.6 mail for store1.quangninh.test loops back to myself"),
])
def test_lmtp_status_filter_defers_routing_failures(tmp_path: Path, postfix_tool: PostfixTool,
                                                    status: str, expected: str) -> None:
    render_postfix(tmp_path, postfix_mail_stores=STORES)
    table = f"regexp:{tmp_path / 'lmtp_status_filter'}"
    result = postfix_tool("postmap", "-q", status, table)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, expected, "")


@pytest.mark.parametrize("status", [
    "5.1.1 <nobody@quangninh.test> User doesn't exist: nobody@quangninh.test",  # a store's real answer
    "4.4.1 connect to store1.quangninh.test[10.89.7.11]:24: Connection refused",  # already soft
    "2.0.0 <a@quangninh.test> Saved",
])
def test_lmtp_status_filter_leaves_other_statuses(tmp_path: Path, postfix_tool: PostfixTool, status: str) -> None:
    render_postfix(tmp_path, postfix_mail_stores=STORES)
    result = postfix_tool("postmap", "-q", status, f"regexp:{tmp_path / 'lmtp_status_filter'}")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


def _add_account(server: TestSlapd, uid: str, mail: str, host: str | None, status: str = "active") -> None:
    base = f"ou=agencies,{server.base_dn}"
    if server.count_entries(base, "(ou=LAB)") == 0:
        server.ldap_tool("ldapadd", input_text=(
            f"dn: ou=LAB,{base}\nobjectClass: organizationalUnit\nou: LAB\n\n"
            f"dn: ou=people,ou=LAB,{base}\nobjectClass: organizationalUnit\nou: people\n"))
    entry = (f"dn: uid={uid},ou=people,ou=LAB,{base}\nobjectClass: inetOrgPerson\nobjectClass: qnMailAccount\n"
             f"uid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {mail}\nqnAccountStatus: {status}\n")
    if host:
        entry += f"qnMailHost: {host}\n"
    server.ldap_tool("ldapadd", input_text=entry)


def test_transport_map_answers_from_a_real_slapd(tmp_path: Path, postfix_tool: PostfixTool) -> None:
    with running_test_slapd(tmp_path) as server:
        _add_account(server, "A1", "a1@quangninh.test", "store2.quangninh.test")
        _add_account(server, "A2", "a2@quangninh.test", None)
        _add_account(server, "A3", "a3@quangninh.test", "store1.quangninh.test", status="disabled")
        render_postfix(tmp_path / "pf", postfix_mail_stores=STORES, postfix_ldap_uri=server.url,
                       postfix_ldap_start_tls=False, postfix_ldap_base_dn=server.base_dn,
                       postfix_ldap_bind_dn=server.service_dn("postfix"),
                       postfix_ldap_bind_password=server.service_passwords["postfix"])
        table = f"ldap:{tmp_path / 'pf' / 'ldap' / 'transport.cf'}"
        routed = postfix_tool("postmap", "-q", "a1@quangninh.test", table)
        local = postfix_tool("postmap", "-q", "a2@quangninh.test", table)
        disabled = postfix_tool("postmap", "-q", "a3@quangninh.test", table)
        domain = postfix_tool("postmap", "-q", "quangninh.test", table)
    assert (routed.returncode, routed.stdout.strip(), routed.stderr) == (0, "lmtp:inet:[store2.quangninh.test]:24", "")
    for result in (local, disabled, domain):
        assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


# --- Dovecot -------------------------------------------------------------------------------

DOVECOT_FILES = ("dovecot.conf", "dovecot-ldap-passdb.conf.ext", "dovecot-ldap-userdb.conf.ext",
                 "dovecot-ldap-userdb-quota.conf.ext")


def render_dovecot(**overrides: Any) -> dict[str, str]:
    variables = role_variables("dovecot", **overrides)
    env = _environment(TEMPLATES / "dovecot")
    names = list(DOVECOT_FILES)
    if variables["dovecot_mail_stores"]:
        names.append("dovecot-ldap-passdb-proxy.conf.ext")
    return {name: env.get_template(f"{name}.j2").render(variables) for name in names}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_dovecot_mta_proxies_logins_of_store_accounts() -> None:
    files = render_dovecot(dovecot_mail_stores=STORES, dovecot_store_name="mta1.quangninh.test",
                           group_names=["mail_all", "mta"])
    conf = _lines(files["dovecot.conf"])
    assert "auth_proxy_self = 10.89.7.11" in conf
    assert "ssl_client_ca_file = /etc/qnprov/tls/ca.pem" in conf
    # The 2.3 login proxy verifies the store with ssl_ca (no CRL), not ssl_client_ca_file.
    assert "ssl_ca = </etc/qnprov/tls/ca.pem" in conf and "ssl_require_crl = no" in conf
    proxy_at = conf.index("args = /etc/dovecot/dovecot-ldap-passdb-proxy.conf.ext")
    local_at = conf.index("args = /etc/dovecot/dovecot-ldap-passdb.conf.ext")
    assert proxy_at < local_at
    assert conf[proxy_at + 1:proxy_at + 8] == [
        "# Found and password right: done. Not found (no qnMailHost) or wrong",
        "# password: the local passdb below, which never finds a qnMailHost account.",
        "# The directory unreachable: fail, never serve a store's account locally.",
        "result_success = return-ok", "result_failure = continue", "result_internalfail = return-fail", "}"]
    proxy = _lines(files["dovecot-ldap-passdb-proxy.conf.ext"])
    assert "pass_attrs = mail=user, qnMailHost=host, =proxy_maybe=y, =starttls=yes" in proxy
    assert ("pass_filter = (&(&(objectClass=qnMailAccount)(mail=%u)(qnAccountStatus=active)(qnEnabledService=imap))"
            "(qnMailHost=*))") in proxy
    assert "auth_bind = yes" in proxy
    local = _lines(files["dovecot-ldap-passdb.conf.ext"])
    assert ("pass_filter = (&(&(objectClass=qnMailAccount)(mail=%u)(qnAccountStatus=active)(qnEnabledService=imap))"
            "(!(qnMailHost=*)))") in local
    # Not a store: no replication, no LMTP listener, every host filter unchanged.
    text = files["dovecot.conf"]
    for absent in ("replication", "mail_replica", "service replicator", "inet_listener lmtp", "doveadm_port"):
        assert absent not in text, absent
    assert "qnMailHost" not in files["dovecot-ldap-userdb.conf.ext"]


def test_dovecot_store_replicates_to_its_replica_over_tls() -> None:
    files = render_dovecot(dovecot_mail_stores=STORES, dovecot_store_name="store1.quangninh.test",
                           group_names=["mail_all", "store"])
    conf = _lines(files["dovecot.conf"])
    assert "mail_plugins = $mail_plugins quota notify replication" in conf
    assert "mail_replica = tcps:store2.quangninh.test:12345" in conf
    # doveadm_port would make the doveadm server proxy the peer's dsync along qnMailHost.
    assert not any(line.startswith("doveadm_port") for line in conf)
    assert "!include /etc/dovecot/qnprov-doveadm.conf.ext" in conf
    assert not any(line.startswith("doveadm_password") for line in conf)  # the secret is not in this file
    doveadm = conf.index("service doveadm {")
    assert conf[doveadm + 1:doveadm + 5] == ["inet_listener doveadm {", "port = 12345", "ssl = yes", "}"]
    lmtp = conf.index("service lmtp {")
    assert "inet_listener lmtp {" in conf[lmtp:lmtp + 8] and "port = 24" in conf[lmtp:lmtp + 8]
    # A store without Postfix: no socket in a private/ that does not exist.
    assert "/var/spool/postfix/private" not in files["dovecot.conf"]
    assert "service replicator {" in conf and "service aggregator {" in conf
    for name in ("dovecot-ldap-userdb.conf.ext", "dovecot-ldap-userdb-quota.conf.ext"):
        iterate = next(line for line in _lines(files[name]) if line.startswith("iterate_filter"))
        assert "(|(qnMailHost=store1.quangninh.test)(qnMailHost=store2.quangninh.test))" in iterate, name
        assert iterate.count("(") == iterate.count(")")


def test_dovecot_store_that_is_also_an_mta_keeps_the_postfix_sockets() -> None:
    files = render_dovecot(dovecot_mail_stores=STORES, dovecot_store_name="store2.quangninh.test")
    conf = files["dovecot.conf"]
    assert "unix_listener /var/spool/postfix/private/dovecot-lmtp {" in conf
    assert "unix_listener /var/spool/postfix/private/auth {" in conf
    assert "mail_replica = tcps:store1.quangninh.test:12345" in conf


# --- The lab (no stores) renders exactly what it rendered before stores existed ---------------

# What the lab's files rendered to on 651c700, main when the store work started (kept as
# files: the fresh-machine stage has no git history to render the old templates from).
# The lab's files must still render to exactly these: every store feature is off without
# qnprov_stores. A later change meant to alter the lab's rendering replaces the files
# and says so in its commit message.
LAB_RENDER = Path(__file__).parent / "data" / "lab-render"


def _lab_shared() -> dict[str, Any]:
    """SHARED with the literal values of inventories/lab/group_vars/all/main.yml."""
    lab = yaml.safe_load((paths.PROJECT_ROOT / "inventories" / "lab" / "group_vars" / "all" / "main.yml").read_text())
    assert "qnprov_stores" not in lab, "the all-in-one lab has no stores"
    literal = {k: v for k, v in lab.items() if not (isinstance(v, str) and "{{" in v)}
    # The lab host is in the webmail group too (dovecot_login_trusted_loopback).
    return {**SHARED, **literal, "group_names": ["mail_all", "directory", "mta", "webmail"]}


@pytest.mark.parametrize("template", [*(f"{name}.j2" for name in DOVECOT_FILES)])
def test_lab_dovecot_files_are_unchanged(template: str) -> None:
    shared = _lab_shared()
    new = _environment(TEMPLATES / "dovecot").get_template(template).render(role_variables("dovecot", shared))
    assert new == (LAB_RENDER / "dovecot" / template.removesuffix(".j2")).read_text()


@pytest.mark.parametrize("template", ["main.cf.j2", "master.cf.j2", *(f"ldap/{m}.cf.j2" for m in
                                                                      POSTFIX_VARS["__postfix_ldap_maps_base"])])
def test_lab_postfix_files_are_unchanged(template: str) -> None:
    shared = _lab_shared()
    variables = role_variables("postfix", shared)
    tables = forwarding.postfix_tables(forwarding.freemail_domains(variables["postfix_qnprov_freemail_extra_domains"]))
    variables["__postfix_qnprov_tables"] = tables
    new = _environment(TEMPLATES / "postfix").get_template(template).render(variables)
    assert new == (LAB_RENDER / "postfix" / template.removesuffix(".j2")).read_text()
