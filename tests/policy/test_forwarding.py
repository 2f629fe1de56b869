"""Forwarding controls (1.3(2)): generated maps, and LDAP forwards through a real Postfix + real slapd."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from qnprov.errors import ConfigError
from qnprov.policy.domains import FREEMAIL_DOMAINS
from qnprov.policy.forwarding import (
    dovecot_reinject_settings,
    freemail_domains,
    ldap_forward_info_query,
    ldap_forward_query,
    reinject_master_entry,
    render_freemail_recipient_regexp,
)
from qnprov_testing.postfix import PostfixInstance, SmtpSink, make_workdir
from qnprov_testing.slapd import TestSlapd, running_test_slapd

BASE = "dc=quangninh,dc=test"


def test_domain_list_comes_from_the_engine_list_plus_site_extras() -> None:
    domains = freemail_domains(["Mail.Example-Free.VN."])
    assert set(FREEMAIL_DOMAINS) <= set(domains)
    assert "mail.example-free.vn" in domains and domains == sorted(domains)
    with pytest.raises(ConfigError):
        freemail_domains(["not a domain"])


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("a@gmail.com", True),
        ("a@GMAIL.COM", True),
        ("a@gmail.com.", True),
        ("a@mail.yahoo.com.vn", True),
        ('"x y"@outlook.com', True),
        ("a@notgmail.com", False),
        ("a@gmail.com.quangninh.test", False),
        ("a@quangninh.gov.vn", False),
    ],
)
def test_regexp_map_matches_with_postmap(
    tmp_path: Path, postfix_tool: Callable[..., subprocess.CompletedProcess[str]], address: str, refused: bool
) -> None:
    table = tmp_path / "freemail.regexp"
    table.write_text(render_freemail_recipient_regexp(freemail_domains()), encoding="utf-8")
    result = postfix_tool("postmap", "-q", address, f"regexp:{table}")
    assert result.stderr == "", result
    if refused:
        assert result.returncode == 0, result
        assert result.stdout.startswith("550 5.7.1 ") and "1.3(2)" in result.stdout
    else:
        # No match: exit 1 and no output (a fatal error would also exit 1, but on stderr).
        assert (result.returncode, result.stdout) == (1, ""), result


def test_master_entry_and_dovecot_settings() -> None:
    entry = reinject_master_entry("127.0.0.1:10027")
    assert entry.startswith("127.0.0.1:10027 inet n - n - - smtpd\n")
    assert "-o milter_macro_daemon_name=reinject" in entry and "-o milter_default_action=tempfail" in entry
    settings = dovecot_reinject_settings()
    assert settings["global"]["submission_host"] == "127.0.0.1:10027"
    assert settings["plugin"]["sieve_redirect_envelope_from"] == "orig_recipient"


def _freemail(*args: str) -> Result:
    """``qnprov policy freemail ...`` as the role runs it on the controller."""
    from qnprov.cli import app

    return CliRunner().invoke(app, ["policy", "freemail", *args])


def test_freemail_command_renders_maps() -> None:
    regexp = _freemail("regexp", "extrafree.vn")
    assert regexp.exit_code == 0 and "extrafree" in regexp.stdout
    query = _freemail("ldap-query")
    assert query.exit_code == 0 and query.stdout.startswith("(&(objectClass=qnMailAccount)")
    bogus = _freemail("bogus")
    assert bogus.exit_code == 2 and bogus.stdout == "" and "bogus" in bogus.stderr


def test_freemail_postfix_tables_is_one_json_document_of_the_three_tables() -> None:
    """What roles/postfix registers on the controller and renders into its staged files."""
    result = _freemail("postfix-tables", "extrafree.vn")
    assert result.exit_code == 0, result.stderr
    tables = json.loads(result.stdout)
    assert set(tables) == {"forward_exclusion", "forward_info_query", "recipient_regexp"}
    assert tables["forward_exclusion"].startswith("(!(|")
    assert "(qnMailForward=*@extrafree.vn)" in tables["forward_exclusion"]
    assert "(qnMailForward=*@gmail.com)" in tables["forward_info_query"]
    assert "/@(.+\\.)?extrafree\\.vn\\.?$/ 550 5.7.1 " in tables["recipient_regexp"]
    bad = _freemail("postfix-tables", "not a domain")
    assert bad.exit_code == 2 and bad.stdout == "" and "not a domain name: not a domain" in bad.stderr


def _ldif(server: TestSlapd) -> str:
    people = f"ou=people,ou=STTTT,ou=agencies,{BASE}"

    def account(uid: str, forwards: list[str]) -> str:
        lines = [
            f"dn: uid={uid},{people}",
            "objectClass: inetOrgPerson", "objectClass: inetLocalMailRecipient", "objectClass: qnMailAccount",
            f"uid: {uid}", f"cn: {uid}", f"sn: {uid}", f"mail: {uid}@quangninh.test",
            "qnAccountStatus: active", "qnAgencyCode: STTTT",
        ]
        lines += [f"qnMailForward: {f}" for f in forwards]
        return "\n".join(lines) + "\n"

    return "\n".join([
        f"dn: ou=STTTT,ou=agencies,{BASE}\nobjectClass: organizationalUnit\nobjectClass: qnAgency\n"
        "ou: STTTT\nqnAgencyCode: STTTT\n",
        f"dn: {people}\nobjectClass: organizationalUnit\nou: people\n",
        account("fwd-colleague", ["lanhdao@quangninh.test"]),
        account("fwd-gmail", ["canbo.rieng@GMAIL.com"]),
        account("fwd-mixed", ["lanhdao@quangninh.test", "canbo@mail.yahoo.com"]),
        account("lanhdao", []),
    ])


def _ldap_cf(server: TestSlapd, path: Path, query: str, result_attribute: str, result_format: str = "%s") -> str:
    path.write_text(
        f"server_host = {server.url}\nversion = 3\nbind = yes\n"
        f"bind_dn = {server.service_dn('postfix')}\nbind_pw = {server.service_passwords['postfix']}\n"
        f"search_base = {BASE}\nquery_filter = {query}\nresult_attribute = {result_attribute}\n"
        f"result_format = {result_format}\n",
        encoding="utf-8",
    )
    path.chmod(0o640)
    shutil.chown(path, group="postfix")
    return f"ldap:{path}"


@pytest.fixture(scope="module")
def slapd() -> Iterator[TestSlapd]:
    with running_test_slapd() as server:
        server.ldap_tool("ldapadd", input_text=_ldif(server))
        yield server


def test_ldap_agency_resolver_reads_qnagencycode(slapd: TestSlapd) -> None:
    import ldap3

    from qnprov.policy.agencies import LdapAgencyResolver

    connection = ldap3.Connection(ldap3.Server(slapd.url), user=slapd.service_dn("postfix"),
                                  password=slapd.service_passwords["postfix"], auto_bind=True,
                                  raise_exceptions=True)
    resolver = LdapAgencyResolver(connection, BASE)
    assert resolver.agency_of("<Fwd-Gmail@QuangNinh.test>") == "STTTT"
    assert resolver.agency_of("nobody@quangninh.test") is None
    assert resolver.agency_of("x*)(qnAgencyCode=*") is None  # filter characters are escaped
    connection.unbind()


@pytest.fixture(scope="module")
def ldap_postfix(slapd: TestSlapd) -> Iterator[tuple[PostfixInstance, SmtpSink]]:
    domains = freemail_domains()
    workdir = make_workdir()
    maps = workdir / "maps"
    maps.mkdir()
    forwards = _ldap_cf(slapd, maps / "forwards.cf", ldap_forward_query(domains), "mail, qnMailForward")
    info = _ldap_cf(slapd, maps / "forward_info.cf", ldap_forward_info_query(domains), "mail",
                    "INFO qnprov 1.3(2): free-mail forward of %s suppressed")
    sink = SmtpSink(workdir).start()
    postfix = PostfixInstance(workdir, relay_port=sink.port, extra_main={
        "virtual_alias_maps": forwards,
        "smtpd_recipient_restrictions": f"check_recipient_access {info}, permit_mynetworks, reject",
    })
    try:
        postfix.start()
        yield postfix, sink
    finally:
        postfix.stop()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _deliver(postfix: PostfixInstance, sink: SmtpSink, rcpt: str) -> list[str]:
    tag = f"<{rcpt}.{time.monotonic_ns()}@test>"
    message = f"From: dan@example.org\r\nTo: {rcpt}\r\nSubject: t\r\nMessage-ID: {tag}\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
        client.sendmail("dan@example.org", [rcpt], message.encode())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [m for m in sink.messages() if tag.encode() in m.content]
        if found:
            time.sleep(0.5)  # a second delivery (the forward) may still be on its way
            return sorted(r for m in sink.messages() if tag.encode() in m.content for r in m.rcpts)
        time.sleep(0.1)
    raise AssertionError(f"nothing delivered for {rcpt}:\n{postfix.log_text()[-2000:]}")


def test_ldap_forward_to_colleague_is_expanded(ldap_postfix: tuple[PostfixInstance, SmtpSink]) -> None:
    postfix, sink = ldap_postfix
    assert _deliver(postfix, sink, "fwd-colleague@quangninh.test") == [
        "fwd-colleague@quangninh.test", "lanhdao@quangninh.test"]


@pytest.mark.parametrize("account", ["fwd-gmail", "fwd-mixed"])
def test_ldap_forward_to_freemail_is_not_expanded_and_is_logged(
    ldap_postfix: tuple[PostfixInstance, SmtpSink], account: str
) -> None:
    postfix, sink = ldap_postfix
    address = f"{account}@quangninh.test"
    assert _deliver(postfix, sink, address) == [address]  # kept in the mailbox only: fail closed
    log = postfix.log_text()
    assert re.search(rf"info: RCPT from .*: qnprov 1\.3\(2\): free-mail forward of {re.escape(address)} "
                     rf"suppressed; from=<dan@example\.org> to=<{re.escape(address)}>", log), log[-2000:]
    delivered_to = {r.lower() for m in sink.messages() for r in m.rcpts}
    assert not {"canbo.rieng@gmail.com", "canbo@mail.yahoo.com"} & delivered_to
