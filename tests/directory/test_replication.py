"""Two real slapd providers in multi-provider (mirror-mode) replication, on loopback.

Their replication settings are rendered from templates/openldap/replication.ldif.j2,
the file the openldap role applies, with the role's ACL template (cn=replicator may
read everything) and base DIT: provider 1 writes the base DIT, provider 2 starts empty
and receives it. They replicate over ldaps through :class:`TcpLink` relays, verifying
each other against the test CA, so a test can cut the network between them while both
keep running.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jinja2
import ldap3
import pytest
from ldap3.core.exceptions import LDAPInsufficientAccessRightsResult
from typer.testing import CliRunner

from qnprov import paths
from qnprov.directory import ldapio
from qnprov.directory.cli import accounts_app
from qnprov.errors import ExternalError
from qnprov_testing import synthetic
from qnprov_testing.slapd import (
    ReplicatedPair,
    TestSlapd,
    free_loopback_port,
    render_replication,
    running_replicated_pair,
)

pytestmark = pytest.mark.slapd
AGENCIES = synthetic.agencies(3)
DEADLINE = 15.0  # seconds; a replicated write normally arrives in milliseconds


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedPair]:
    with running_replicated_pair(tmp_path_factory.mktemp("repl")) as providers:
        yield providers


def _writer(server: TestSlapd) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(server.url), user=server.writer_dn, password=server.writer_password,
                            auto_bind=True, raise_exceptions=True)


def _read(server: TestSlapd, dn: str) -> dict[str, list[str]] | None:
    """The entry's description and entryCSN as the writer sees them, or None when absent."""
    with _writer(server) as connection:
        connection.raise_exceptions = False
        connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["description", "entryCSN"])
        if not connection.entries:
            return None
        attrs = connection.entries[0].entry_attributes_as_dict
        return {name: [str(v) for v in attrs.get(name, [])] for name in ("description", "entryCSN")}


def _wait(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Poll until ``check()`` holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic() - start


def _add(server: TestSlapd, name: str, description: str) -> str:
    dn = f"ou={name},ou=groups,{server.base_dn}"
    with _writer(server) as connection:
        connection.add(dn, ["organizationalUnit"], {"ou": name, "description": description})
    return dn


def _set_description(server: TestSlapd, dn: str, value: str) -> str:
    """Replace the description; returns the entryCSN this provider stamped on the write."""
    with _writer(server) as connection:
        connection.modify(dn, {"description": [(ldap3.MODIFY_REPLACE, [value])]})
    entry = _read(server, dn)
    assert entry is not None and entry["description"] == [value]
    return entry["entryCSN"][0]


def test_provider_2_received_the_base_dit_from_provider_1(pair: ReplicatedPair):
    # Provider 2 was started empty (seed=False): everything it holds came by replication,
    # including the replicator account it authenticates its own peer with.
    assert pair.second.count_entries() == pair.first.count_entries() >= 8
    assert pair.second.count_entries(search_filter="(cn=replicator)") == 1


def test_a_write_on_either_provider_is_readable_on_the_other(pair: ReplicatedPair):
    dn = _add(pair.first, "repl-one-to-two", "written on provider 1")
    _wait(lambda: _read(pair.second, dn) is not None, "provider 1's add on provider 2")
    assert _read(pair.second, dn)["description"] == ["written on provider 1"]  # type: ignore[index]

    csn = _set_description(pair.second, dn, "changed on provider 2")
    _wait(lambda: (_read(pair.first, dn) or {}).get("entryCSN") == [csn], "provider 2's change on provider 1")
    assert _read(pair.first, dn)["description"] == ["changed on provider 2"]  # type: ignore[index]
    # The change carries provider 2's server ID in its CSN (…#002#…).
    assert csn.split("#")[2] == "002"


def test_the_replicator_reads_passwords_but_cannot_write(pair: ReplicatedPair):
    server = pair.first
    with ldap3.Connection(ldap3.Server(server.url), user=server.service_dn("replicator"),
                          password=server.service_passwords["replicator"], auto_bind=True,
                          raise_exceptions=True) as connection:
        connection.search(server.service_dn("qnprov"), "(objectClass=*)", search_scope=ldap3.BASE,
                          attributes=["userPassword"])
        assert connection.entries[0].userPassword.value  # it must copy password hashes
        with pytest.raises(LDAPInsufficientAccessRightsResult):
            connection.modify(server.base_dn, {"o": [(ldap3.MODIFY_REPLACE, ["taken over"])]})


@pytest.mark.parametrize("first_writer", [1, 2])
def test_split_brain_converges_on_the_later_write(pair: ReplicatedPair, first_writer: int):
    providers = {1: pair.first, 2: pair.second}
    dn = _add(pair.first, f"repl-conflict-{first_writer}", "before the cut")
    _wait(lambda: _read(pair.second, dn) is not None, "the entry on provider 2")

    pair.cut()
    try:
        csns = {}
        for number in (first_writer, 3 - first_writer):
            csns[number] = _set_description(providers[number], dn, f"written on provider {number} while cut off")
            time.sleep(0.02)
        # Both took their write and neither sees the other's: a real split brain.
        time.sleep(0.5)
        for number in (1, 2):
            assert _read(providers[number], dn)["description"] == [  # type: ignore[index]
                f"written on provider {number} while cut off"]
    finally:
        pair.restore()

    def converged() -> bool:
        one, two = _read(pair.first, dn), _read(pair.second, dn)
        return one is not None and one == two

    seconds = _wait(converged, "convergence after reconnecting")
    final = _read(pair.first, dn)
    assert final is not None
    winner = max(csns, key=lambda number: csns[number])
    # The later CSN wins on both providers, whichever provider wrote it.
    assert winner == 3 - first_writer
    assert final == {"description": [f"written on provider {winner} while cut off"], "entryCSN": [csns[winner]]}
    print(f"split brain (provider {first_writer} wrote first): provider {winner}'s write won "
          f"(entryCSN {csns[winner]} > {csns[3 - winner]}); converged {seconds:.2f} s after reconnecting")


def test_replication_settings_come_from_the_role_template(pair: ReplicatedPair):
    ldif = render_replication(pair.first, server_id=1, peers=["ldaps://ldap2.quangninh.test"],
                              password="pa'ss word-12345")
    syncrepl = next(line for line in ldif.replace("\n  ", " ").splitlines() if line.startswith("olcSyncrepl:"))
    for setting in ("provider=ldaps://ldap2.quangninh.test", "type=refreshAndPersist", 'retry="1 +"',
                    "bindmethod=simple", 'binddn="cn=replicator,ou=services,dc=quangninh,dc=test"',
                    "tls_reqcert=demand", f"tls_cacert={pair.first.ca_cert}",
                    # quoted: a blank does not end the value
                    "credentials=\"pa'ss word-12345\""):
        assert setting in syncrepl
    assert "olcMultiProvider: TRUE" in ldif and "olcServerID: 1" in ldif
    # What slapd holds after the pair was configured from the same template.
    live = subprocess.run(["ldapsearch", "-Q", "-LLL", "-o", "ldif-wrap=no", "-Y", "EXTERNAL",
                           "-H", pair.first.ldapi_url, "-b", "olcDatabase={1}mdb,cn=config", "-s", "base",
                           "olcMultiProvider", "olcSyncrepl"], capture_output=True, text=True, check=True)
    assert "olcMultiProvider: TRUE" in live.stdout
    assert "tls_reqcert=demand" in live.stdout and "type=refreshAndPersist" in live.stdout


# --- clients: several providers, in order ------------------------------------------------


def _settings(pair: ReplicatedPair, urls: list[str], password: str | None = None) -> ldapio.LdapSettings:
    server = pair.second
    return ldapio.LdapSettings(url=urls[0], fallback_urls=tuple(urls[1:]), base_dn=server.base_dn,
                               bind_dn=server.writer_dn, bind_password=password or server.writer_password,
                               ca_cert=server.ca_cert, domain="quangninh.test")


def test_the_directory_connection_fails_over_to_the_next_provider(pair: ReplicatedPair):
    dead = f"ldaps://127.0.0.1:{free_loopback_port()}"  # nothing listens there: provider 1 "down"
    live = f"ldaps://127.0.0.1:{pair.second.ldaps_port}"
    connection = ldapio.connect(_settings(pair, [dead, live]))
    try:
        assert connection.server.port == pair.second.ldaps_port and connection.bound
        assert connection.extend.standard.who_am_i() == f"dn:{pair.second.writer_dn}"
    finally:
        connection.unbind()
    # Every provider down: one error naming each, never the password.
    other_dead = f"ldaps://127.0.0.1:{free_loopback_port()}"
    with pytest.raises(ExternalError, match="no directory provider answered") as down:
        ldapio.connect(_settings(pair, [dead, other_dead]))
    assert dead in str(down.value) and other_dead in str(down.value)
    assert pair.second.writer_password not in str(down.value)
    # A refused bind is an answer, not an outage: no failover that would hide it.
    with pytest.raises(ExternalError, match=r"invalidCredentials|Invalid credentials") as refused:
        ldapio.connect(_settings(pair, [live, f"ldaps://127.0.0.1:{pair.first.ldaps_port}"], password="wrong-pw"))
    assert f"cannot bind to {live} " in str(refused.value)


def test_accounts_apply_fails_over_and_the_accounts_replicate(pair: ReplicatedPair, tmp_path: Path):
    """`qnprov accounts apply` with provider 1's URL dead writes on provider 2; provider 1 gets them."""
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES)
    synthetic.write_roster_csv(tmp_path / "roster.csv", synthetic.roster(AGENCIES, 20))
    password_file = tmp_path / "writer.pw"
    password_file.write_text(pair.second.writer_password + "\n")
    password_file.chmod(0o600)
    urls = f"ldaps://127.0.0.1:{free_loopback_port()} ldaps://127.0.0.1:{pair.second.ldaps_port}"
    result = CliRunner().invoke(accounts_app, [
        "apply", "--ldap-url", urls, "--ca-cert", str(pair.second.ca_cert), "--bind-dn", pair.second.writer_dn,
        "--bind-password-file", str(password_file), "--base-dn", pair.second.base_dn,
        "--primary-domain", "quangninh.test", "--agencies", str(tmp_path / "agencies.csv"),
        "--roster", str(tmp_path / "roster.csv"), "--credentials-dir", str(tmp_path / "creds"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["create"], report["applied"], report["errors"]) == (20, True, [])
    accounts = "(objectClass=qnMailAccount)"
    assert pair.second.count_entries(search_filter=accounts) == 20
    _wait(lambda: pair.first.count_entries(search_filter=accounts) == 20, "the new accounts on provider 1")


def test_postfix_maps_fail_over_to_the_next_provider(pair: ReplicatedPair, tmp_path: Path, postfix_tool):
    """The role's virtual_mailboxes map with two ldaps URIs answers while the first is down.

    The account is written on provider 1 and looked up on provider 2, so the answer also
    proves the replication the maps rely on.
    """
    dn = f"uid=failover1,ou=people,ou=REPL,ou=agencies,{pair.first.base_dn}"
    pair.first.ldap_tool("ldapadd", input_text=(
        f"dn: ou=REPL,ou=agencies,{pair.first.base_dn}\nobjectClass: organizationalUnit\nobjectClass: qnAgency\n"
        f"ou: REPL\nqnAgencyCode: REPL\n\n"
        f"dn: ou=people,ou=REPL,ou=agencies,{pair.first.base_dn}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\nobjectClass: qnMailAccount\n"
        "uid: failover1\ncn: failover1\nsn: failover1\nmail: failover1@quangninh.test\n"
        "qnAccountStatus: active\nqnAgencyCode: REPL\n"))
    _wait(lambda: pair.second.count_entries(search_filter="(uid=failover1)") == 1, "the account on provider 2")
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.TEMPLATES_DIR / "postfix")),
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
                                     autoescape=False)  # noqa: S701 - a Postfix table, not HTML
    dead = f"ldaps://127.0.0.1:{free_loopback_port()}"
    text = environment.get_template("ldap/virtual_mailboxes.cf.j2").render(
        postfix_ldap_uri=f"{dead} ldaps://127.0.0.1:{pair.second.ldaps_port}", postfix_ldap_start_tls=True,
        postfix_ldap_tls_ca_file=str(pair.second.ca_cert), postfix_ldap_bind_dn=pair.second.service_dn("postfix"),
        postfix_ldap_bind_password=pair.second.service_passwords["postfix"], postfix_ldap_timeout=5,
        postfix_ldap_base_dn=pair.second.base_dn)
    assert "start_tls = no" in text  # ldaps:// URIs: TLS from the start
    table = tmp_path / "virtual_mailboxes.cf"
    table.write_text(text)
    table.chmod(0o640)
    shutil.chown(table, group="postfix")
    found = postfix_tool("postmap", "-q", "failover1@quangninh.test", f"ldap:{table}")
    assert (found.returncode, found.stdout.strip()) == (0, "failover1@quangninh.test"), found.stderr
    missing = postfix_tool("postmap", "-q", "nobody@quangninh.test", f"ldap:{table}")
    assert (missing.returncode, missing.stdout) == (1, ""), missing.stderr


def test_slapd_keeps_the_rendered_syncrepl_value_so_the_role_converges(pair: ReplicatedPair):
    """ldap_attrs (state: exact) compares the live olcSyncrepl with the rendered one: they must be equal,
    also after a restart, or every converge would rewrite it (and restart replication)."""
    import sys

    sys.path.insert(0, str(paths.ROLES_DIR / "openldap" / "filter_plugins"))
    from ldif_records import ldif_records

    rendered = render_replication(pair.first, server_id=1, peers=[f"ldaps://127.0.0.1:{pair.to_second.port}"],
                                  password=pair.first.service_passwords["replicator"])
    [database] = [r for r in ldif_records(rendered) if r["dn"] == "olcDatabase={1}mdb,cn=config"]
    expected = database["changes"][0]["values"]

    def live() -> list[str]:
        out = subprocess.run(["ldapsearch", "-Q", "-LLL", "-o", "ldif-wrap=no", "-Y", "EXTERNAL",
                              "-H", pair.first.ldapi_url, "-b", "olcDatabase={1}mdb,cn=config", "-s", "base",
                              "olcSyncrepl"], capture_output=True, text=True, check=True).stdout
        return [line.removeprefix("olcSyncrepl: ") for line in out.splitlines() if line.startswith("olcSyncrepl: ")]

    assert live() == expected
    pair.first.stop()
    pair.first.start()
    assert live() == expected
    # And it still replicates after the restart.
    dn = _add(pair.second, "repl-after-restart", "written on provider 2 after provider 1 restarted")
    _wait(lambda: _read(pair.first, dn) is not None, "provider 2's add on the restarted provider 1")
