"""The report's directory view read from a real slapd (project schema and ACLs) on loopback."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnprov.cli import app
from qnprov.directory import ldapio
from qnprov_testing import audit_trails, synthetic
from qnprov_testing.slapd import TestSlapd, running_test_slapd

pytestmark = pytest.mark.slapd
runner = CliRunner()


@pytest.fixture
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSlapd]:
    with running_test_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


def test_report_reads_accounts_and_states_from_the_directory(slapd: TestSlapd, tmp_path: Path) -> None:
    password = tmp_path / "writer.pw"
    password.write_text(slapd.writer_password + "\n")
    password.chmod(0o600)
    conn = ["--ldap-url", slapd.url, "--bind-dn", slapd.writer_dn, "--bind-password-file", str(password),
            "--base-dn", slapd.base_dn]
    agencies = synthetic.agencies(3)
    people = synthetic.roster(agencies, 30)
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", agencies)
    synthetic.write_roster_csv(tmp_path / "roster.csv", people)
    applied = runner.invoke(app, ["accounts", "apply", *conn, "--primary-domain", "quangninh.test", "--agencies",
                                  str(tmp_path / "agencies.csv"), "--roster", str(tmp_path / "roster.csv"),
                                  "--credentials-dir", str(tmp_path / "creds")])
    assert applied.exit_code == 0, applied.output
    # Two AG001 people leave: their accounts are disabled.
    left = [p for p in people if p.agency == "AG001"][:2]
    synthetic.write_roster_csv(tmp_path / "roster.csv", [
        p if p not in left else type(p)(p.employee_id, p.agency, p.full_name, p.title, "left") for p in people])
    applied = runner.invoke(app, ["accounts", "apply", *conn, "--primary-domain", "quangninh.test", "--agencies",
                                  str(tmp_path / "agencies.csv"), "--roster", str(tmp_path / "roster.csv"),
                                  "--allow-mass-change"])
    assert applied.exit_code == 0, applied.output
    connection = ldapio.connect(ldapio.LdapSettings(url=slapd.url, base_dn=slapd.base_dn, bind_dn=slapd.writer_dn,
                                                    bind_password=slapd.writer_password, domain="quangninh.test"))
    state = ldapio.read_state(connection, slapd.base_dn)
    connection.unbind()
    mail = {a.employee_id: a.mail for a in state.accounts.values()}
    gone = mail[left[0].employee_id]
    # Three messages reach a disabled AG001 account, one reaches an active UBND account.
    when = dt.datetime(2026, 11, 4, 8, tzinfo=dt.UTC)
    ag001 = audit_trails.Agency("AG001", "quangninh.test", 10)
    ubnd = audit_trails.Agency("UBND", "quangninh.test", 10)
    rule = ("signed-document-invalid", "1.2", "tag", "inbound")
    events = [audit_trails.decision_event(rule, ag001, gone, "x@example.org", when + dt.timedelta(hours=n))
              for n in range(3)]
    active = mail[next(p for p in people if p.agency == "UBND").employee_id]
    events.append(audit_trails.decision_event(rule, ubnd, active, "x@example.org", when + dt.timedelta(hours=4)))
    audit_trails.write_chain(tmp_path / "trail", events)
    result = runner.invoke(app, ["report", "compliance", *conn, "--trail", f"mail1={tmp_path / 'trail'}",
                                 "--month", "2026-11", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["directory"]["available"] is True
    rows = {row["agency"]: row for row in document["agencies"]}
    assert {code: row["accounts"] for code, row in rows.items()} == {"UBND": 10, "AG001": 10, "AG002": 10}
    assert rows["AG001"]["per_100_accounts"] == 30.0 and rows["UBND"]["per_100_accounts"] == 10.0
    assert rows["AG002"]["events"] == 0 and rows["AG001"]["name"] == "Cơ quan số 1"
    hygiene = {row["agency"]: row for row in document["hygiene"]}
    assert (hygiene["AG001"]["active"], hygiene["AG001"]["disabled"]) == (8, 2)
    assert (hygiene["AG001"]["disabled_still_receiving"], hygiene["AG001"]["messages_to_disabled"]) == (1, 3)
    assert hygiene["UBND"]["messages_to_disabled"] == 0
    wrong = runner.invoke(app, ["report", "compliance", "--ldap-url", slapd.url, "--base-dn", slapd.base_dn,
                                "--bind-password-file", str(tmp_path / "missing.pw"), "--trail",
                                f"mail1={tmp_path / 'trail'}", "--month", "2026-11", "--format", "json"])
    assert wrong.exit_code == 0  # the report renders without the directory, and says why
    assert "missing.pw" in json.loads(wrong.stdout)["directory"]["reason"]
