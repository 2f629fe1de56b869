"""The typer commands, driven through CliRunner against a real slapd."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnprov.directory.cli import accounts_app, agency_app
from qnprov_testing import synthetic
from qnprov_testing.slapd import TestSlapd

pytestmark = pytest.mark.slapd
runner = CliRunner()
AGENCIES = synthetic.agencies(5)


def connection_args(slapd: TestSlapd, password_file: Path) -> list[str]:
    return ["--ldap-url", slapd.url, "--bind-dn", slapd.writer_dn, "--bind-password-file", str(password_file),
            "--base-dn", slapd.base_dn, "--primary-domain", "quangninh.test"]


def inputs(tmp_path: Path, people: int = 100, rows: str | None = None) -> list[str]:
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES)
    synthetic.write_roster_csv(tmp_path / "roster.csv", synthetic.roster(AGENCIES, people))
    if rows is not None:
        with (tmp_path / "roster.csv").open("a", encoding="utf-8") as handle:
            handle.write(rows)
    return ["--agencies", str(tmp_path / "agencies.csv"), "--roster", str(tmp_path / "roster.csv")]


def run_json(app: object, args: list[str], code: int = 0) -> dict:
    result = runner.invoke(app, args)  # type: ignore[arg-type]
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_plan_apply_replan(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    conn, files = connection_args(slapd, password_file), inputs(tmp_path)
    planned = run_json(accounts_app, ["plan", *conn, *files, "--json"])
    assert planned == {"create": 100, "modify": 0, "move": 0, "disable": 0, "enable": 0, "errors": [],
                       "applied": False}
    assert slapd.count_entries(search_filter="(objectClass=qnMailAccount)") == 0  # plan writes nothing

    creds = tmp_path / "creds"
    applied = run_json(accounts_app, ["apply", *conn, *files, "--json", "--credentials-dir", str(creds)])
    assert applied["create"] == 100 and applied["applied"] is True
    files_written = sorted(p.name for p in creds.iterdir())
    assert files_written == sorted(f"{a.code}.csv" for a in AGENCIES)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in creds.iterdir())
    assert sum(len(p.read_text().splitlines()) - 1 for p in creds.iterdir()) == 100

    again = run_json(accounts_app, ["plan", *conn, *files, "--json"])
    assert again == {"create": 0, "modify": 0, "move": 0, "disable": 0, "enable": 0, "errors": [],
                     "applied": False}
    human = runner.invoke(accounts_app, ["plan", *conn, *files])
    assert human.exit_code == 0 and "Nothing to do" in human.stdout


def test_bad_rows_refuse_the_apply_unless_skip_invalid(slapd: TestSlapd, password_file: Path,
                                                       tmp_path: Path) -> None:
    conn = connection_args(slapd, password_file)
    files = inputs(tmp_path, 10, rows="E000003,UBND,Duplicate Person,,\nZ1,GHOST,Ai Đó,,\nZ2,UBND,Bad#Name,,\n")
    refused = run_json(accounts_app, ["apply", *conn, *files, "--json"], code=2)
    assert refused["applied"] is False and refused["create"] == 10  # what would have been created
    assert "nothing written" in refused["message"]
    assert [(e["line"], e["field"]) for e in refused["errors"]] == [
        (12, "employee_id"), (13, "agency"), (14, "full_name")]
    assert slapd.count_entries(search_filter="(|(objectClass=qnAgency)(objectClass=qnMailAccount))") == 0

    human = runner.invoke(accounts_app, ["apply", *conn, *files])
    assert human.exit_code == 2 and "line 13: agency: unknown agency 'GHOST'" in human.stdout
    assert "Traceback" not in human.output

    partial = run_json(accounts_app, ["apply", *conn, *files, "--json", "--skip-invalid"])
    assert partial["create"] == 10 and partial["applied"] is True and len(partial["errors"]) == 3


def test_mass_disable_needs_confirmation(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    conn = connection_args(slapd, password_file)
    run_json(accounts_app, ["apply", *conn, *inputs(tmp_path, 100), "--json"])
    fewer = inputs(tmp_path, 90)  # ten people missing from HR: 10% > 5%
    result = runner.invoke(accounts_app, ["apply", *conn, *fewer])
    assert result.exit_code == 2 and "--allow-mass-change" in result.output
    assert run_json(accounts_app, ["plan", *conn, *fewer, "--json", "--partial"])["disable"] == 0
    done = run_json(accounts_app, ["apply", *conn, *fewer, "--json", "--allow-mass-change"])
    assert done["disable"] == 10 and done["applied"]


def test_agency_add_with_domain_then_list(slapd: TestSlapd, password_file: Path) -> None:
    conn = connection_args(slapd, password_file)
    first = runner.invoke(agency_app, ["add", "STTTT", "--name", "Sở Thông tin và Truyền thông",
                                       "--domain", "stttt.quangninh.test", "--quota-mb", "2048", *conn])
    assert first.exit_code == 0, first.output
    for record in ("IN MX 10 mail.quangninh.test.", '"v=spf1 mx -all"', "_domainkey.stttt.quangninh.test",
                   "_dmarc.stttt.quangninh.test", "p=quarantine"):
        assert record in first.stdout
    for dn in ("ou=STTTT,ou=agencies", "ou=people,ou=STTTT,ou=agencies", "ou=groups,ou=STTTT,ou=agencies",
               "cn=stttt-all,ou=groups,ou=STTTT,ou=agencies", "cn=stttt-admins,ou=groups,ou=STTTT,ou=agencies",
               "associatedDomain=stttt.quangninh.test,ou=domains"):
        assert slapd.count_entries(f"{dn},{slapd.base_dn}", "(objectClass=*)") >= 1
    out = slapd.ldap_tool("ldapsearch", "-LLL", "-b", f"ou=STTTT,ou=agencies,{slapd.base_dn}", "-s", "base",
                          "(objectClass=qnAgency)", "qnDefaultQuota", "qnMailDomain").stdout
    assert f"qnDefaultQuota: {2048 * 1024 * 1024}" in out and "qnMailDomain: stttt.quangninh.test" in out

    again = run_json(agency_app, ["add", "STTTT", "--name", "x", *conn, "--json"])
    assert again["entries_written"] == 0
    child = runner.invoke(agency_app, ["add", "PHONG1", "--name", "Phòng 1", "--parent", "NOPE", *conn])
    assert child.exit_code == 2 and "parent agency 'NOPE' does not exist" in child.output

    listed = run_json(agency_app, ["list", *conn[:-2], "--json"])
    assert listed == [{"code": "STTTT", "name": "Sở Thông tin và Truyền thông", "parent": None,
                       "domain": "stttt.quangninh.test", "active": 0, "disabled": 0}]

    # --json lists the same records, owner names without the trailing dot.
    snv = run_json(agency_app, ["add", "SNV", "--name", "Sở Nội vụ", "--domain", "snv.quangninh.test", *conn,
                                "--json"])
    assert snv["dns"] == [
        {"name": "snv.quangninh.test", "type": "MX", "value": "10 mail.quangninh.test."},
        {"name": "snv.quangninh.test", "type": "TXT", "value": "v=spf1 mx -all"},
        {"name": "mail._domainkey.snv.quangninh.test", "type": "CNAME", "value": "mail._domainkey.quangninh.test."},
        {"name": "_dmarc.snv.quangninh.test", "type": "TXT",
         "value": "v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s; rua=mailto:dmarc@quangninh.test"}]


def test_purge_removes_mailbox_then_entry(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    conn = connection_args(slapd, password_file)
    run_json(accounts_app, ["apply", *conn, *inputs(tmp_path, 40), "--json"])
    run_json(accounts_app, ["apply", *conn, *inputs(tmp_path, 38), "--json", "--allow-mass-change"])

    dry = run_json(accounts_app, ["purge", "--older-than", "0", "--dry-run", *conn[:-2], "--json"])
    assert [c["employee_id"] for c in dry["candidates"]] == ["E000038", "E000039"]
    assert dry["removed"] == 0 and slapd.count_entries(search_filter="(uid=E000039)") == 1
    assert run_json(accounts_app, ["purge", "--older-than", "30", "--dry-run", *conn[:-2], "--json"])[
        "candidates"] == []

    log = tmp_path / "removed"
    recorder = tmp_path / "mailhost.sh"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    recorder.chmod(0o755)
    done = run_json(accounts_app, ["purge", "--older-than", "0", "--mailbox-exec", str(recorder), *conn[:-2],
                                   "--json"])
    assert done["removed"] == 2
    removed = log.read_text().splitlines()
    assert [line.split()[-1] for line in removed] == [c["mailbox"] for c in dry["candidates"]]
    assert all(line.startswith("rm -rf --one-file-system -- /var/vmail/quangninh.test/") for line in removed)
    assert slapd.count_entries(search_filter="(|(uid=E000038)(uid=E000039))") == 0


def test_lab_inventory_reads_the_lab_status_file(slapd: TestSlapd, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "lab.json").write_text(json.dumps({
        "ldap": {"url": slapd.url, "base_dn": slapd.base_dn, "bind_dn": slapd.writer_dn,
                 "bind_password": slapd.writer_password},
        "domain": "quangninh.test"}))
    monkeypatch.setenv("QNPROV_STATE_DIR", str(state))
    planned = run_json(accounts_app, ["plan", "-i", "lab", *inputs(tmp_path, 3), "--json"])
    assert planned["create"] == 3


def test_connection_mistakes_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(accounts_app, ["plan", "--roster", "x.csv"])
    assert result.exit_code == 2 and "give -i INVENTORY or --ldap-url" in result.output
    monkeypatch.setenv("QNPROV_STATE_DIR", str(tmp_path))
    result = runner.invoke(accounts_app, ["plan", "-i", "lab", "--roster", "x.csv"])
    assert result.exit_code == 2 and "lab.json is missing" in result.output
    assert "Traceback" not in result.output


def test_upstream_source_through_the_cli(slapd: TestSlapd, password_file: Path, tmp_path: Path) -> None:
    hr = f"ou=hr,{slapd.base_dn}"
    slapd.ldap_tool("ldapadd", input_text=(
        f"dn: {hr}\nobjectClass: organizationalUnit\nou: hr\n\n"
        f"dn: uid=hr1,{hr}\nobjectClass: inetOrgPerson\nuid: hr1\ncn: Đỗ Thị Hằng\nsn: Đỗ\n"
        "employeeNumber: H1\ndepartmentNumber: UBND\n"))
    source_password = tmp_path / "hr.pw"
    source_password.write_text(slapd.root_password)
    synthetic.write_agencies_csv(tmp_path / "agencies.csv", AGENCIES[:1])
    applied = run_json(accounts_app, [
        "apply", *connection_args(slapd, password_file), "--agencies", str(tmp_path / "agencies.csv"),
        "--source-url", slapd.url, "--source-base", hr, "--source-bind-dn", slapd.root_dn,
        "--source-bind-password-file", str(source_password), "--source-filter", "(objectClass=inetOrgPerson)",
        "--json"])
    assert applied["create"] == 1
    assert slapd.count_entries(search_filter="(mail=hangdt@quangninh.test)") == 1


def test_lab_status_may_list_several_providers(slapd: TestSlapd, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-host lab's status lists every provider ("urls"); a dead first one is skipped."""
    from qnprov_testing.slapd import free_loopback_port

    state = tmp_path / "state"
    state.mkdir()
    dead = f"ldap://127.0.0.1:{free_loopback_port()}"
    (state / "lab.json").write_text(json.dumps({
        "ldap": {"url": dead, "urls": [dead, slapd.url], "base_dn": slapd.base_dn, "bind_dn": slapd.writer_dn,
                 "bind_password": slapd.writer_password},
        "domain": "quangninh.test"}))
    monkeypatch.setenv("QNPROV_STATE_DIR", str(state))
    planned = run_json(accounts_app, ["plan", "-i", "lab", *inputs(tmp_path, 3), "--json"])
    assert planned["create"] == 3
