"""The controls CLI through typer's CliRunner: exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from qnprov.controls.cli import dns_app, report_app, verify_command

runner = CliRunner()


def _verify_app() -> typer.Typer:
    app = typer.Typer()
    app.command("verify")(verify_command)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps "verify" a named sub-command
        pass

    return app


def test_verify_refuses_a_waiver_without_reason(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.yml"
    waivers.write_text("waivers:\n  - id: QN-OS-09\n    expires: 2027-01-01\n")
    result = runner.invoke(_verify_app(), ["verify", "-i", "lab", "--waivers", str(waivers)])
    assert result.exit_code == 2
    assert "waiver QN-OS-09 has no reason" in result.output
    assert "Traceback" not in result.output


def test_verify_refuses_an_unknown_inventory(tmp_path: Path) -> None:
    result = runner.invoke(_verify_app(), ["verify", "-i", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not found" in result.output


def test_traceability_json_lists_every_clause(tmp_path: Path) -> None:
    result = runner.invoke(report_app, ["traceability", "--json", "--results", str(tmp_path / "none.json"),
                                        "--html", str(tmp_path / "trace.html")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [c["clause"] for c in doc["clauses"]] == ["1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)", "2", "3"]
    assert doc["verify"] is None
    assert all(c["status"] in ("gap", "not-verified") for c in doc["clauses"])
    assert (tmp_path / "trace.html").read_text().startswith("<!DOCTYPE html>")


def test_dns_records_from_files(tmp_path: Path) -> None:
    dkim = tmp_path / "quangninh.test.mail.txt"
    key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"
    dkim.write_text(f'mail._domainkey IN TXT ( "v=DKIM1; k=rsa; " "p={key}" ) ;\n')
    zone = runner.invoke(dns_app, ["records", "--domain", "quangninh.test", "--mx", "mail1.quangninh.test",
                                   "--dkim-file", str(dkim)])
    assert zone.exit_code == 0, zone.output
    assert f'mail._domainkey.quangninh.test.\t3600\tIN\tTXT\t"v=DKIM1; k=rsa; p={key}"' in zone.output
    as_json = runner.invoke(dns_app, ["records", "--domain", "quangninh.test", "--mx", "mail1.quangninh.test",
                                      "--dkim-file", str(dkim), "--json", "--dmarc-policy", "reject"])
    doc = json.loads(as_json.output)["quangninh.test"]
    assert any(r["value"].startswith("v=DMARC1; p=reject") for r in doc["records"])
    assert doc["mta_sts_policy"].startswith("version: STSv1\r\nmode: enforce")


def test_dns_records_refuse_weak_dmarc_and_missing_key() -> None:
    weak = runner.invoke(dns_app, ["records", "--domain", "quangninh.test", "--mx", "m.quangninh.test",
                                   "--dmarc-policy", "none"])
    assert weak.exit_code == 2 and "quarantine or reject" in weak.output
    missing = runner.invoke(dns_app, ["records", "--domain", "quangninh.test", "--mx", "m.quangninh.test"])
    assert missing.exit_code == 2 and "no deployed DKIM key" in missing.output
