"""The openldap role's own replication tasks (tasks/replication.yml), run by Ansible against two real slapds.

No container: two test providers run on loopback (qnprov_testing.slapd, the role's ACL
template and base DIT, provider 2 left empty), and ansible-playbook runs the role's
task file for both, over each slapd's own ldapi socket instead of the system one (the
only variable overridden; everything else comes from the role's defaults and vars).
The play must make the pair replicate both ways, and a second run must change nothing.

The community.general LDAP modules need python-ldap on the managed host, which here is
this machine: Debian's python3-ldap (scripts/bootstrap.sh), used through /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from qnprov import paths
from qnprov_testing.slapd import TestSlapd, free_loopback_port, start_test_slapd, write_test_pki

pytestmark = pytest.mark.slapd
ROLE = paths.ROLES_DIR / "openldap"
SYSTEM_PYTHON = Path("/usr/bin/python3")
BASE_DN = "dc=quangninh,dc=test"


def _has_python_ldap() -> bool:
    return subprocess.run([str(SYSTEM_PYTHON), "-c", "import ldap"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestSlapd, TestSlapd]]:
    if not _has_python_ldap():
        pytest.fail("python3-ldap is missing for /usr/bin/python3; scripts/bootstrap.sh installs it")
    workdir = tmp_path_factory.mktemp("role-repl")
    (workdir / "pki").mkdir()
    pki = write_test_pki(workdir / "pki", ip_addresses=("127.0.0.1",))
    passwords = {"replicator": "repl-" + secrets.token_urlsafe(16)}
    first = start_test_slapd(workdir / "p1", pki=pki, ldaps_port=free_loopback_port(), replicator=True,
                             service_passwords=passwords)
    second: TestSlapd | None = None
    try:
        second = start_test_slapd(workdir / "p2", pki=pki, ldaps_port=free_loopback_port(), replicator=True,
                                  seed=False, service_passwords=first.service_passwords)
        yield first, second
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()


def _run_role_tasks(tmp_path: Path, first: TestSlapd, second: TestSlapd) -> dict:
    """ansible-playbook with tasks/replication.yml on both providers; returns the json callback's report."""
    hosts = {}
    for number, server, peer in ((1, first, second), (2, second, first)):
        hosts[f"provider{number}"] = {
            "ansible_connection": "local", "ansible_python_interpreter": str(SYSTEM_PYTHON),
            "openldap_server_id": number, "openldap_replication_peers": [f"ldaps://127.0.0.1:{peer.ldaps_port}"],
            "openldap_admin_password": server.root_password, "qnprov_tls_ca_file": str(server.ca_cert),
            "test_ldapi_uri": server.ldapi_url,
        }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"directory": {"hosts": hosts}}))
    (tmp_path / "group_vars").mkdir(exist_ok=True)
    if not (tmp_path / "group_vars" / "all.yml").exists():
        (tmp_path / "group_vars" / "all.yml").symlink_to(ROLE / "defaults" / "main.yml")  # below host vars
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "directory", "gather_facts": False, "vars_files": [str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": "The role's replication tasks", "ansible.builtin.include_tasks": {
            "file": str(ROLE / "tasks" / "replication.yml")},
            # The test slapd's admin socket instead of the system's ldapi:///.
            "vars": {"__openldap_ldapi_uri": "{{ test_ldapi_uri }}"}}],
    }]))
    extra = {"role_path": str(ROLE), "qnprov_ldap_base_dn": BASE_DN, "qnprov_domain": "quangninh.test",
             "qnprov_ldap_admin_password": "unused-admin-pw", "qnprov_ldap_postfix_password": "unused-postfix",
             "qnprov_ldap_dovecot_password": "unused-dovecot", "qnprov_ldap_qnprov_password": "unused-qnprov",
             "openldap_replication_enabled": True,
             "openldap_replication_password": first.service_passwords["replicator"]}
    env = dict(os.environ, ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_HOST_KEY_CHECKING="false")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
         str(tmp_path / "play.yml"), "-e", json.dumps(extra)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300)
    report = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else {}
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # The replication password never reaches the output.
    assert first.service_passwords["replicator"] not in result.stdout + result.stderr
    return report


def _entry_on(server: TestSlapd, dn: str) -> bool:
    return server.ldap_tool("ldapsearch", "-LLL", "-b", dn, "-s", "base", "1.1", check=False).returncode == 0


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def test_the_role_makes_two_providers_replicate_and_converges(providers: tuple[TestSlapd, TestSlapd],
                                                              tmp_path: Path):
    first, second = providers
    replicator = first.service_dn("replicator")
    assert _entry_on(first, replicator) and not _entry_on(second, replicator)

    report = _run_role_tasks(tmp_path, first, second)
    stats = report["stats"]
    assert stats["provider1"]["changed"] > 0 and stats["provider2"]["changed"] > 0
    # Provider 2 waited in the play until the base DIT had arrived from provider 1.
    assert _entry_on(second, replicator)
    assert second.count_entries() == first.count_entries()

    # Both directions, with the settings the role wrote.
    first.ldap_tool("ldapadd", input_text=f"dn: ou=from-one,ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\n"
                                          "ou: from-one\n")
    second.ldap_tool("ldapadd", input_text=f"dn: ou=from-two,ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\n"
                                           "ou: from-two\n")
    _wait(lambda: _entry_on(second, f"ou=from-one,ou=groups,{BASE_DN}"), "provider 1's entry on provider 2")
    _wait(lambda: _entry_on(first, f"ou=from-two,ou=groups,{BASE_DN}"), "provider 2's entry on provider 1")

    # A second converge changes nothing on either provider.
    again = _run_role_tasks(tmp_path, first, second)["stats"]
    assert (again["provider1"]["changed"], again["provider2"]["changed"]) == (0, 0), again
    assert again["provider1"]["failures"] == again["provider2"]["failures"] == 0
