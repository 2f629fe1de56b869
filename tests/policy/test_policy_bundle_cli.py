"""The rule bundle as data, site overrides, and the offline CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from policy_corpus import docx, message
from typer.testing import CliRunner

from qnprov.errors import ConfigError
from qnprov.policy.bundle import load_policy, packaged_bundle_path
from qnprov.policy.cli import policy_app
from qnprov.policy.models import CLAUSE_IDS, DecisionIdentity

RUNNER = CliRunner()


def test_packaged_bundle_identity() -> None:
    policy = load_policy()
    decision = policy.bundle.decision
    assert decision.issuer.vi == "Ủy ban nhân dân tỉnh Quảng Ninh"
    assert decision.supersedes.number == "1372/2008/QĐ-UBND"
    assert decision.supersedes.date == dt.date(2008, 5, 8)
    assert decision.effective_after_days == 10
    # The supplied text states neither number nor signing date: marked unknown, not invented.
    assert decision.number is None and decision.signing_date is None
    assert set(decision.unknown_fields) == {"number", "signing_date", "effective_date"}
    assert [clause.id for clause in policy.bundle.clauses] == list(CLAUSE_IDS)
    assert all(rule.vi and rule.en for rule in policy.bundle.rules)
    assert {rule.clause for rule in policy.bundle.rules} == {"1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)"}


def test_effective_date_is_signing_plus_ten_days() -> None:
    raw = yaml.safe_load(packaged_bundle_path().read_text(encoding="utf-8"))["decision"]
    raw.update(number="9999/2014/QĐ-UBND", signing_date="2014-09-01", unknown_fields=["effective_date"])
    identity = DecisionIdentity.model_validate({**raw, "effective_date": None})
    assert identity.computed_effective_date == dt.date(2014, 9, 11)
    with pytest.raises(ValueError, match="signing_date \\+ 10 days"):
        DecisionIdentity.model_validate({**raw, "effective_date": "2014-09-05"})
    with pytest.raises(ValueError, match="unknown_fields"):
        DecisionIdentity.model_validate({**raw, "number": None, "unknown_fields": []})


def _write_bundle(tmp_path: Path, mutate: dict[str, object]) -> Path:
    source = packaged_bundle_path()
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    data.update(mutate)
    for name in ("markings.yaml", "freemail-domains.txt", "registration-senders.txt",
                 "registration-subjects.yaml", "province-hosts.yaml"):
        (tmp_path / name).write_bytes((source.parent / name).read_bytes())
    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_lint_accepts_packaged_bundle() -> None:
    result = RUNNER.invoke(policy_app, ["lint", str(packaged_bundle_path())])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: bundle qn-email-2014.r1, 13 rules")


@pytest.mark.parametrize(("mutate", "message_part"), [
    ({"rules": [{"id": "new-rule", "clause": "1.4", "vi": "a", "en": "b", "detector": "classified_marking",
                 "scope": ["inbound"], "action": "reject"}]}, "clause '1.4'"),
    ({"rules": [{"id": "new-rule", "clause": "1.1", "vi": "a", "en": "b", "detector": "telepathy",
                 "scope": ["inbound"], "action": "reject"}]}, "unknown detector 'telepathy'"),
    ({"rules": [{"id": "new-rule", "clause": "1.1", "vi": "a", "en": "b", "detector": "classified_marking",
                 "scope": ["inbound"], "action": "explode"}]}, "rules.0.action"),
    ({"local_domains": ["not a domain"]}, "not a valid domain"),
    ({"clauses": []}, "clauses must be exactly"),
])
def test_lint_rejects_invalid_bundles_with_exit_2(tmp_path: Path, mutate: dict[str, object],
                                                  message_part: str) -> None:
    bundle = _write_bundle(tmp_path, mutate)
    result = RUNNER.invoke(policy_app, ["lint", str(bundle)])
    assert result.exit_code == 2
    assert message_part in result.output
    assert "Traceback" not in result.output


def test_lint_rejects_bad_overrides(tmp_path: Path) -> None:
    overrides = tmp_path / "o.yml"
    for text, part in [
        ("rules:\n  no-such-rule: {action: tag}\n", "unknown rules ['no-such-rule']"),
        ("rules:\n  classified-marking: {action: maybe}\n", "rules.classified-marking.action"),
        ("rules:\n  classified-marking: {params: {nonsense: 1}}\n", "nonsense"),
        ("limits:\n  max_depth: 0\n", "max_depth"),
        ("limits:\n  max_beer: 3\n", "unknown limits"),
        ("rules: [\n", "not valid YAML"),
    ]:
        overrides.write_text(text, encoding="utf-8")
        result = RUNNER.invoke(policy_app, ["lint", str(packaged_bundle_path()), "--overrides", str(overrides)])
        assert result.exit_code == 2, (text, result.output)
        assert part in result.output, (text, result.output)


def test_overrides_merge_actions_and_params_from_inventory(tmp_path: Path) -> None:
    overrides = tmp_path / "group_vars.yml"
    overrides.write_text(
        "qnprov_policy_overrides:\n"
        "  local_domains: [quangninh.test]\n"
        "  rules:\n"
        "    classified-marking: {action: quarantine, params: {declassified_is_marking: true}}\n"
        "    freemail-outbound: {action: tag}\n"
        "    sender-not-authenticated: {enabled: false}\n", encoding="utf-8")
    policy = load_policy(overrides_path=overrides)
    assert policy.local_domains == frozenset({"quangninh.test"})
    assert policy.bundle.rule("classified-marking").action == "quarantine"
    assert policy.bundle.rule("classified-marking").params == {"declassified_is_marking": True}
    assert policy.bundle.rule("freemail-outbound").action == "tag"
    assert not policy.bundle.rule("sender-not-authenticated").enabled
    # The bundle file itself is untouched.
    assert load_policy().bundle.rule("classified-marking").action == "reject"


def test_missing_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read rule bundle"):
        load_policy(tmp_path / "nope.yaml")


def test_show_prints_every_rule() -> None:
    result = RUNNER.invoke(policy_app, ["show"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for rule in load_policy().bundle.rules:
        assert rule.id in result.output
    assert "1372/2008/QĐ-UBND" in result.output and "unknown" in result.output


def test_check_json_is_exactly_the_engine_decision(tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(attachments=[("cv.docx", "application/octet-stream", docx(textbox="TỐI MẬT"))]))
    result = RUNNER.invoke(policy_app, ["check", str(eml), "--mail-from", "chuyenvien@quangninh.gov.vn",
                                        "--rcpt", "a@quangninh.gov.vn", "--rcpt", "b@quangninh.gov.vn",
                                        "--auth-user", "chuyenvien@quangninh.gov.vn", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"verdict", "findings", "policy_version"}
    assert data["verdict"] == "reject"
    assert data["policy_version"] == "qn-email-2014.r1"
    [finding] = data["findings"]
    assert set(finding) == {"rule", "clause", "action", "location", "evidence"}
    assert finding["clause"] == "1.3(1)"
    assert finding["location"] == "attachment:cv.docx/word/document.xml"
    assert "TỐI MẬT" in finding["evidence"]


def test_check_defaults_envelope_from_headers_and_prints_text(tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(sender="security@facebookmail.com", to="vanthu@quangninh.gov.vn"))
    result = RUNNER.invoke(policy_app, ["check", str(eml)])
    assert result.exit_code == 0
    assert "verdict: tag" in result.output
    assert "service-registration" in result.output


@pytest.mark.parametrize("args", [["check", "/nonexistent/m.eml"], ["check", "{eml}", "--direction", "sideways"]])
def test_check_usage_and_read_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message())
    result = RUNNER.invoke(policy_app, [arg.format(eml=eml) for arg in args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_tls_map_command(tmp_path: Path) -> None:
    overrides = tmp_path / "o.yml"
    overrides.write_text("province_hosts:\n  - {domain: hd.quangninh.gov.vn}\n", encoding="utf-8")
    output = tmp_path / "tls_policy"
    result = RUNNER.invoke(policy_app, ["tls-map", "--overrides", str(overrides), "-o", str(output)])
    assert result.exit_code == 0
    assert "hd.quangninh.gov.vn\tsecure" in output.read_text(encoding="utf-8")


def test_show_json_is_the_merged_bundle(tmp_path: Path) -> None:
    overrides = tmp_path / "o.yml"
    overrides.write_text("rules:\n  service-registration: {action: reject}\n", encoding="utf-8")
    result = RUNNER.invoke(policy_app, ["show", "--json", "--overrides", str(overrides)])
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["version"] == "qn-email-2014.r1"
    assert document["decision"]["supersedes"]["number"] == "1372/2008/QĐ-UBND"
    actions = {rule["id"]: rule["action"] for rule in document["rules"]}
    assert actions["service-registration"] == "reject"
    assert document["effective_date_computed"] is None


def test_overrides_example_in_docs_lints(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
    text = docs.read_text(encoding="utf-8")
    start = text.index("```yaml\nqnprov_policy_overrides:") + len("```yaml\n")
    example = tmp_path / "example.yml"
    example.write_text(text[start:text.index("```", start)], encoding="utf-8")
    result = RUNNER.invoke(policy_app, ["lint", str(packaged_bundle_path()), "--overrides", str(example)])
    assert result.exit_code == 0, result.output
