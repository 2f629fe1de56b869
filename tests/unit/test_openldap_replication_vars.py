"""The openldap role's replication variables, evaluated by Ansible itself.

A throw-away play loads the role's defaults (as group variables, below the host's)
and vars (with its filter plugins) for the
two hosts of a ``directory`` group and reports what the tasks would use. Off, every
value is what the role used before replication existed; on, provider 2 gets the
replicator account, its ACL and limits, peers from the directory group, and does not
write the base DIT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qnprov import paths

ROLE = paths.ROLES_DIR / "openldap"
BASE_DN = "dc=quangninh,dc=test"
SHARED = {
    "role_path": str(ROLE), "qnprov_ldap_base_dn": BASE_DN, "qnprov_domain": "quangninh.test",
    "qnprov_ldap_admin_password": "admin-secret-123", "qnprov_ldap_postfix_password": "postfix-secret-1",
    "qnprov_ldap_dovecot_password": "dovecot-secret-1", "qnprov_ldap_qnprov_password": "qnprov-secret-12",
}
PLAY = f"""
- hosts: directory
  gather_facts: false
  vars_files: [{ROLE}/vars/main.yml]
  tasks:
    - ansible.builtin.debug:
        msg:
          limits: "{{{{ __openldap_limits }}}}"
          indexes: "{{{{ __openldap_db_indexes }}}}"
          accounts: "{{{{ __openldap_service_accounts_all | map(attribute='cn') | list }}}}"
          replicators: "{{{{ __openldap_acl_vars.openldap_service_replicators }}}}"
          writes_dit: "{{{{ __openldap_writes_dit | bool }}}}"
          peers: "{{{{ openldap_replication_peers }}}}"
          records: "{{{{ __openldap_replication_records if openldap_replication_enabled else [] }}}}"
"""


def _play(tmp_path: Path, play: str, hosts: str, extra: dict[str, Any],
          callback: str = "default") -> subprocess.CompletedProcess[str]:
    """ansible-playbook on this machine, the role's defaults as group variables (below the host's)."""
    (tmp_path / "play.yml").write_text(play)
    (tmp_path / "hosts.yml").write_text(hosts)
    (tmp_path / "group_vars").mkdir(exist_ok=True)
    if not (tmp_path / "group_vars" / "all.yml").exists():
        (tmp_path / "group_vars" / "all.yml").symlink_to(ROLE / "defaults" / "main.yml")
    env = dict(os.environ, ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"), ANSIBLE_STDOUT_CALLBACK=callback,
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false")
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), "-c", "local",
         str(tmp_path / "play.yml"), "-e", json.dumps({**SHARED, **extra})],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)


def _evaluate(tmp_path: Path, **extra: Any) -> dict[str, dict[str, Any]]:
    result = _play(tmp_path, PLAY, "directory:\n  hosts:\n    ldap1.quangninh.test: {openldap_server_id: 1}\n"
                                   "    ldap2.quangninh.test: {openldap_server_id: 2}\n", extra, callback="json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    hosts = report["plays"][0]["tasks"][0]["hosts"]
    return {name: host["msg"] for name, host in hosts.items()}


def test_replication_off_leaves_the_role_as_it_was(tmp_path: Path):
    values = _evaluate(tmp_path)["ldap2.quangninh.test"]
    assert values["limits"] == [f'{{0}}dn.exact="cn=qnprov,ou=services,{BASE_DN}" time=unlimited size=unlimited']
    assert "entryCSN eq" not in values["indexes"]
    assert values["accounts"] == ["postfix", "dovecot", "qnprov"]
    assert values["replicators"] == []
    # Without replication every provider writes its own base DIT, as before.
    assert values["writes_dit"] is True
    assert values["records"] == []


@pytest.mark.parametrize("password", ["replicator-secret-1", "with blanks and 'quotes'"])
def test_replication_on_for_provider_2(tmp_path: Path, password: str):
    hosts = _evaluate(tmp_path, openldap_replication_enabled=True, openldap_replication_password=password)
    first, second = hosts["ldap1.quangninh.test"], hosts["ldap2.quangninh.test"]
    assert (first["writes_dit"], second["writes_dit"]) == (True, False)
    assert first["peers"] == ["ldaps://ldap2.quangninh.test:636"]
    assert second["peers"] == ["ldaps://ldap1.quangninh.test:636"]
    assert second["accounts"] == ["postfix", "dovecot", "qnprov", "replicator"]
    assert second["replicators"] == ["replicator"]
    assert second["limits"][1] == f'{{1}}dn.exact="cn=replicator,ou=services,{BASE_DN}" time=unlimited size=unlimited'
    assert second["indexes"][-1] == "entryCSN eq"
    # The records tasks/replication.yml picks out of replication.ldif.j2.
    records = {record["dn"]: record for record in second["records"]}
    overlay = records["olcOverlay=syncprov,olcDatabase={1}mdb,cn=config"]
    assert overlay["changetype"] == "add" and overlay["attributes"]["olcOverlay"] == ["syncprov"]
    assert records["cn=config"]["changes"] == [
        {"operation": "replace", "attribute": "olcServerID", "values": ["2"]}]
    syncrepl, multi = records["olcDatabase={1}mdb,cn=config"]["changes"]
    assert multi == {"operation": "replace", "attribute": "olcMultiProvider", "values": ["TRUE"]}
    [value] = syncrepl["values"]
    assert value.startswith("{0}rid=001 provider=ldaps://ldap1.quangninh.test:636 bindmethod=simple ")
    for setting in (f'binddn="cn=replicator,ou=services,{BASE_DN}"', f'credentials="{password}"',
                    "type=refreshAndPersist", 'retry="5 +"', "tls_reqcert=demand",
                    "tls_cacert=/etc/qnprov/tls/ca.pem"):
        assert setting in value


def _assert_task() -> dict[str, Any]:
    """The role's own "Check the replication settings" task, as tasks/replication.yml has it."""
    tasks = yaml.safe_load((ROLE / "tasks" / "replication.yml").read_text())
    [task] = [t for t in tasks if t["name"] == "Check the replication settings"]
    return task


@pytest.mark.parametrize(("password", "accepted"), [
    ("replicator-secret-1", True),
    ("with blanks and 'quotes'", True),
    ('has a "double quote"', False),  # slapd misreads it inside olcSyncrepl's quoted credentials
    ("has a back\\slash-123", False),
    ("short", False),
])
def test_the_role_checks_the_replication_password(tmp_path: Path, password: str, accepted: bool):
    task = _assert_task()
    play = yaml.safe_dump([{
        "hosts": "directory", "gather_facts": False, "vars_files": [str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": task["name"], "ansible.builtin.assert": task["ansible.builtin.assert"]}],
    }])
    result = _play(tmp_path, play, "directory:\n  hosts:\n    ldap2.quangninh.test: {openldap_server_id: 2}\n",
                   {"openldap_replication_enabled": True, "openldap_replication_password": password,
                    "openldap_replication_peers": ["ldaps://ldap1.quangninh.test"]})
    assert (result.returncode == 0) is accepted, result.stdout[-1500:]
    if not accepted:
        assert "without double quotes, backslashes or control characters" in " ".join(result.stdout.split())


def test_tasks_that_carry_the_replication_password_hide_it():
    """Issue 10: the replication password never appears in logs or --diff output."""
    tasks = [*yaml.safe_load((ROLE / "tasks" / "replication.yml").read_text()),
             *yaml.safe_load((ROLE / "tasks" / "replication_wait.yml").read_text())]
    secret_names = ("openldap_replication_password", "openldap_admin_password", "__openldap_syncrepl_change")
    carrying = []
    for task in tasks:
        module_args = {key: value for key, value in task.items()
                       if key not in ("name", "when", "no_log", "diff", "register", "changed_when", "failed_when",
                                      "check_mode", "until", "retries", "delay", "loop")}
        if task["name"] == "Check the replication settings":
            # Conditions and message name the variable; Ansible prints neither its value.
            assert "{{" not in task["ansible.builtin.assert"]["fail_msg"]
            continue
        if any(name in json.dumps(module_args) for name in secret_names):
            carrying.append(task["name"])
            assert task.get("no_log") is True, task["name"]
    assert "Pull the database from the other providers (olcSyncrepl)" in carrying
    assert "Ask the peers whether they already hold the directory" in carrying
    [syncrepl] = [t for t in tasks if t["name"] == "Pull the database from the other providers (olcSyncrepl)"]
    assert syncrepl["diff"] is False
    # The dit.yml task that sets the replicator's password hides it too.
    dit = yaml.safe_load((ROLE / "tasks" / "dit.yml").read_text())
    [passwords] = [t for t in dit if t["name"] == "Keep the service account passwords current"]
    assert passwords["loop"] == "{{ __openldap_service_accounts_all }}" and passwords["no_log"] is True


def test_the_wait_for_replicated_data_comes_after_provider_1_writes_it():
    """A play runs each task on every host in lockstep: a provider waiting for the
    directory in a task placed before provider 1's DIT and seed tasks blocks provider 1
    from reaching them, and the wait times out (lab-ha's first converge did)."""
    imported = [task["ansible.builtin.import_tasks"]
                for task in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())]
    assert imported.index("replication_wait.yml") > imported.index("seed.yml") > imported.index("dit.yml")
    assert imported.index("replication.yml") < imported.index("dit.yml")
    waits = [task["name"] for task in yaml.safe_load((ROLE / "tasks" / "replication.yml").read_text())
             if "until" in task]
    assert waits == []
