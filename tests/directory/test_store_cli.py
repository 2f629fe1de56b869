"""``qnprov store failover|failback`` and store-aware ``accounts apply``, against a real slapd.

The directory is a real slapd with the project's schema and ACLs; every write goes
through the qnprov service account, and every assertion reads the attribute values
back from slapd. The target store's replicator is the one thing not run here (no
Dovecot on this machine): its answer is real ``doveadm -f tab replicator status '*'``
output text (the format of Dovecot 2.3's doveadm-replicator.c), fed through the same
parser, or the probe's "down" error. The probe's own path over Ansible is tested in
test_store_probe.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from qnprov.cli import app
from qnprov.stores import cli as store_cli
from qnprov.stores.probe import StoreDown, SyncState, parse_replicator_status
from qnprov_testing import synthetic
from qnprov_testing.slapd import TestSlapd

pytestmark = pytest.mark.slapd
runner = CliRunner()
S1, S2 = "store1.quangninh.test", "store2.quangninh.test"
AGENCIES = synthetic.agencies(2)  # UBND (assigned to store1), AG001 (assigned to store2)
HEADER = "username\tpriority\tfast sync\tfull sync\tsuccess sync\tfailed\tnext sync secs"


def write_inventory(tmp_path: Path, slapd: TestSlapd) -> Path:
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"qnprov_ldap_base_dn": slapd.base_dn, "qnprov_domain": "quangninh.test",
                 "qnprov_stores": [{"name": S1, "replica": S2}, {"name": S2, "replica": S1}],
                 "qnprov_agency_stores": {"UBND": S1, "AG001": S2}},
        "children": {"store": {"hosts": {"store1": {"dovecot_store_name": S1},
                                         "store2": {"dovecot_store_name": S2}}}}}}))
    return inventory


def connection(slapd: TestSlapd, password_file: Path) -> list[str]:
    return ["--ldap-url", slapd.url, "--bind-dn", slapd.writer_dn, "--bind-password-file", str(password_file),
            "--base-dn", slapd.base_dn]


def hosts_in_directory(slapd: TestSlapd) -> dict[str, str]:
    """mail -> qnMailHost of every account, as slapd holds them."""
    text = slapd.ldap_tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", slapd.base_dn,
                           "(objectClass=qnMailAccount)", "mail", "qnMailHost").stdout
    found: dict[str, str] = {}
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        found[fields["mail"]] = fields.get("qnMailHost", "")
    return found


class RecordingProbe:
    """Answers as the store's replicator would (or is down), and records who was asked."""

    def __init__(self, text: str | None) -> None:
        self.text, self.asked = text, []

    def replicator_status(self, store: str) -> dict[str, SyncState]:
        self.asked.append(store)
        if self.text is None:
            raise StoreDown(f"{store.split('.')[0]}: Failed to connect to the host via ssh: Connection refused")
        return parse_replicator_status(self.text)


def status_text(mails: list[str], *, success: str = "00:00:42", failed: str = "-") -> str:
    rows = [f"{mail}\tnone\t00:00:42\t01:02:03\t{success}\t{failed}\t00:00:00" for mail in mails]
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.fixture
def provisioned(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """Six accounts applied with stores configured; returns the inventory and the CLI's connection args."""
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES)
    synthetic.write_roster_csv(tmp_path / "roster.csv", synthetic.roster(AGENCIES, 6))
    inventory, conn = write_inventory(tmp_path, slapd), connection(slapd, password_file)
    result = runner.invoke(app, ["accounts", "apply", "-i", str(inventory), *conn, "--primary-domain",
                                 "quangninh.test", "--agencies", str(tmp_path / "agencies.csv"),
                                 "--roster", str(tmp_path / "roster.csv"), "--json"])
    assert result.exit_code == 0, result.output
    return inventory, conn


def _by_store(hosts: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for mail, host in sorted(hosts.items()):
        grouped.setdefault(host, []).append(mail)
    return grouped


def test_accounts_apply_homes_each_account_on_its_agencys_store(slapd: TestSlapd,
                                                               provisioned: tuple[Path, list[str]]) -> None:
    grouped = _by_store(hosts_in_directory(slapd))
    assert sorted(grouped) == [S1, S2]
    assert len(grouped[S1]) == 3 and len(grouped[S2]) == 3
    ubnd = slapd.ldap_tool("ldapsearch", "-LLL", "-b", f"ou=UBND,ou=agencies,{slapd.base_dn}",
                           "(objectClass=qnMailAccount)", "qnMailHost").stdout
    assert ubnd.count(f"qnMailHost: {S1}") == 3 and S2 not in ubnd


def test_failover_refused_when_the_replica_is_down(slapd: TestSlapd, provisioned: tuple[Path, list[str]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    inventory, conn = provisioned
    before = hosts_in_directory(slapd)
    probe = RecordingProbe(None)
    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: probe)
    result = runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *conn])
    assert result.exit_code == 2
    assert f"refused: failover to {S2}: the store is down or its replicator does not answer" in result.output
    assert "Nothing was changed" in result.output or "nothing was changed" in result.output
    assert probe.asked == [S2]
    assert hosts_in_directory(slapd) == before


def test_failover_refused_when_the_replica_never_synced_an_account(
    slapd: TestSlapd, provisioned: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory, conn = provisioned
    before = hosts_in_directory(slapd)
    on_s1 = _by_store(before)[S1]
    # The replicator knows them all, but one has never had a successful sync ("-").
    text = status_text(on_s1[:2]) + f"{on_s1[2]}\tnone\t-\t-\t-\ty\t00:00:30\n"
    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: RecordingProbe(text))
    result = runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *conn, "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["refused"] is True and document["applied"] is False and document["to_move"] == 3
    assert "has never synced 1 of the 3 accounts" in document["message"]
    assert document["errors"] == [{"mail": on_s1[2], "reason": "has never synced"}]
    assert hosts_in_directory(slapd) == before


def test_failover_check_then_apply_then_again(slapd: TestSlapd, provisioned: tuple[Path, list[str]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    inventory, conn = provisioned
    before = hosts_in_directory(slapd)
    on_s1, on_s2 = _by_store(before)[S1], _by_store(before)[S2]
    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: RecordingProbe(status_text(on_s1 + on_s2)))

    checked = runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *conn, "--check", "--json"])
    assert checked.exit_code == 0, checked.output
    document = json.loads(checked.stdout)
    assert (document["to_move"], document["moved"], document["already_there"], document["applied"]) == (3, 0, 3, False)
    assert sorted(a["mail"] for a in document["accounts"]) == on_s1
    assert hosts_in_directory(slapd) == before  # --check wrote nothing

    applied = runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *conn, "--json"])
    assert applied.exit_code == 0, applied.output
    document = json.loads(applied.stdout)
    assert (document["to_move"], document["moved"], document["applied"]) == (3, 3, True)
    assert set(hosts_in_directory(slapd).values()) == {S2}

    again = runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *conn])
    assert again.exit_code == 0, again.output
    assert f"failover: moved 0 account(s) to {S2}; 6 already there." in again.stdout
    assert set(hosts_in_directory(slapd).values()) == {S2}


def test_failback_moves_only_the_stores_own_accounts_once_resynced(
    slapd: TestSlapd, provisioned: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inventory, conn = provisioned
    before = hosts_in_directory(slapd)
    everyone = sorted(before)
    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: RecordingProbe(status_text(everyone)))
    assert runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *conn]).exit_code == 0

    # A new UBND person hired during the failover goes where UBND's mail is served now (store2).
    roster = synthetic.roster(AGENCIES, 8)
    synthetic.write_roster_csv(tmp_path / "roster8.csv", roster)
    hired = runner.invoke(app, ["accounts", "apply", "-i", str(inventory), *conn, "--primary-domain",
                                "quangninh.test", "--roster", str(tmp_path / "roster8.csv"), "--json"])
    assert hired.exit_code == 0, hired.output
    during = hosts_in_directory(slapd)
    assert len(during) == 8 and set(during.values()) == {S2}

    # store1 back, but its last sync attempt failed: not resynced yet, refused.
    stale = RecordingProbe(status_text(sorted(during), failed="y"))
    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: stale)
    refused = runner.invoke(app, ["store", "failback", S1, "-i", str(inventory), *conn])
    assert refused.exit_code == 2 and "has not resynced" in refused.output
    assert stale.asked == [S1]
    assert hosts_in_directory(slapd) == during

    # Synced too long ago for --max-sync-age: refused as well.
    old = RecordingProbe(status_text(sorted(during), success="02:00:00"))
    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: old)
    assert runner.invoke(app, ["store", "failback", S1, "-i", str(inventory), *conn]).exit_code == 2
    assert hosts_in_directory(slapd) == during

    monkeypatch.setattr(store_cli, "make_probe", lambda _inventory: RecordingProbe(status_text(sorted(during))))
    back = runner.invoke(app, ["store", "failback", S1, "-i", str(inventory), *conn, "--json"])
    assert back.exit_code == 0, back.output
    document = json.loads(back.stdout)
    assert (document["to_move"], document["moved"]) == (4, 4)  # UBND's 3 + the one hired meanwhile
    after = hosts_in_directory(slapd)
    ubnd = {a.employee_id for a in roster if a.agency == "UBND"}
    ubnd_mail = slapd.ldap_tool("ldapsearch", "-LLL", "-b", f"ou=UBND,ou=agencies,{slapd.base_dn}",
                                "(objectClass=qnMailAccount)", "mail").stdout
    assert len(ubnd) == 4
    for mail, host in after.items():
        assert host == (S1 if f"mail: {mail}" in ubnd_mail else S2), mail

    again = runner.invoke(app, ["store", "failback", S1, "-i", str(inventory), *conn, "--json"])
    assert json.loads(again.stdout)["to_move"] == 0
    assert hosts_in_directory(slapd) == after


@pytest.mark.parametrize(("args", "message"), [
    (["failover", "store9.quangninh.test"], "'store9.quangninh.test' is not a mail store of this inventory"),
    (["failover", S1, "--to", S1], f"failover target {S1} is the store being failed over"),
])
def test_bad_store_arguments_are_one_line(slapd: TestSlapd, provisioned: tuple[Path, list[str]],
                                          args: list[str], message: str) -> None:
    inventory, conn = provisioned
    before = hosts_in_directory(slapd)
    result = runner.invoke(app, ["store", *args, "-i", str(inventory), *conn])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert hosts_in_directory(slapd) == before


def test_an_inventory_without_stores_is_refused(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "plain"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"vars": {"qnprov_ldap_base_dn": slapd.base_dn}}}))
    result = runner.invoke(app, ["store", "failover", S1, "-i", str(inventory), *connection(slapd, password_file)])
    assert result.exit_code == 2 and "has no mail stores" in result.output
