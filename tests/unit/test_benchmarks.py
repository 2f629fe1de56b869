"""The benchmarks' references and goal lines (the figures themselves are measured by the benchmarks, not here)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ber_encoder  # noqa: E402
import goals  # noqa: E402
import ha_drill  # noqa: E402
import verify_time  # noqa: E402


def test_goal_lines_say_met_or_not_met() -> None:
    assert goals.Goal("re-plan", 2.5, 3.0, "s").line() == "re-plan: 2.5 s (goal <= 3 s, met)"
    assert goals.Goal("re-plan", 3.5, 3.0, "s").line() == "re-plan: 3.5 s (goal <= 3 s, not met)"
    assert goals.Goal("ratio", 0.6, 0.8, at_most=False).line() == "ratio: 0.6 (goal >= 0.8, not met)"
    assert goals.Goal("ratio", 0.8, 0.8, at_most=False).as_dict() == {
        "what": "ratio", "figure": 0.8, "unit": "", "goal": ">= 0.8", "met": True}


def test_every_benchmark_prints_its_goals() -> None:
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "goals.py")
    assert {p.name for p in scripts} >= {"ber_encoder.py", "converge.py", "ldap_provision.py",
                                         "milter_throughput.py", "policy_engine.py", "verify_time.py",
                                         "office_reader.py", "pdf_reader.py", "milter_pool.py"}
    for script in scripts:
        calls = {node.func.id for node in ast.walk(ast.parse(script.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        # print_goals directly, or through goals.reader_main (which calls it)
        assert "Goal" in calls and calls & {"print_goals", "reader_main"}, f"{script.name} does not print its goals"


def test_verify_reference_is_the_slowest_single_scan() -> None:
    scans = {"testssl smtp": 50.0, "testssl imaps": 80.0, "testssl submissions": 70.0, "lynis": 30.0}
    results, checks = verify_time.summarise(2.0, 30.0, {"passed": 69}, scans, 120.0, {"passed": 70})
    row = results["with_scanners"]
    assert row["reference_seconds"] == 80.0 and "testssl imaps" in row["reference"]
    assert row["ratio"] == 1.5  # not 120 / 230, the scans one after another
    assert results["without_scanners"]["ratio"] == 15.0
    assert [g.line() for g in checks] == ["verify without scanners: 30 s (goal <= 60 s, met)",
                                          "verify with scanners: 120 s (goal <= 300 s, met)"]


def test_ber_benchmark_encodes_the_same_bytes_as_ldap3() -> None:
    requests = ber_encoder.workload(300, 10)
    kinds = [kind for kind, _, _ in requests]
    # 10 agencies x 5 entries, 300 accounts, 10 list member adds, 3 title changes (1%)
    assert kinds.count("add") == 10 * 5 + 300 and kinds.count("modify") == 10 + 3
    assert ber_encoder.encode_qnprov(requests) == ber_encoder.encode_ldap3(requests)
    result = ber_encoder.run(300, 10, rounds=1)
    assert result["identical_bytes"] and result["requests"] == len(requests)
    (goal,) = result["goals"]
    assert goal.target == 6.0 and not goal.at_most and goal.figure == result["ratio_ldap3_to_qnprov"] > 0


def test_ber_benchmark_stops_when_the_encoders_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ber_encoder.encode_qnprov
    monkeypatch.setattr(ber_encoder, "encode_qnprov", lambda requests: [b"\x00" + b for b in real(requests)])
    with pytest.raises(SystemExit, match="encode differently"):
        ber_encoder.run(20, 2, rounds=1)


def test_policy_engine_benchmark_names_its_references() -> None:
    import policy_engine

    assert "not* a floor" in (policy_engine.__doc__ or "")
    result = policy_engine.run(60)
    assert result["messages"] == 60 and sum(result["verdicts"].values()) == 60
    parse, decode = (result["reference_stdlib_parse_msgs_per_cpu_second"],
                     result["reference_stdlib_parse_decode_msgs_per_cpu_second"])
    assert parse > 0 and decode > 0
    assert result["ratio_engine_to_stdlib_parse_cpu"] == pytest.approx(
        result["engine_msgs_per_cpu_second"] / parse, rel=0.05)
    (goal,) = result["goals"]
    assert goal.target == 300.0 and not goal.at_most and goal.figure == result["engine_msgs_per_cpu_second"]


def test_detector_quality_benchmark_measures_both_clauses_against_the_goals() -> None:
    import detector_quality

    result = detector_quality.run(2, 13)
    marking, registration = result["1.3(1)"], result["1.3(3)"]
    assert (marking["positives"], marking["negatives"]) == (10 * 2, 6 * 2)
    assert (registration["positives"], registration["negatives"]) == (8 * 2, 8 * 2)
    assert marking["recall_vs_perfect_ratio"] == marking["recall"] == marking["detected"] / marking["positives"]
    goals = {goal.what: goal for goal in result["goals"]}
    recall = goals["1.3(3) recall (reference: perfect classifier = 1)"]
    assert (recall.target, recall.at_most, recall.figure) == (1.0, False, registration["recall"])
    assert goals["1.3(1) false positives"].figure == marking["false_positives"]
    assert goals["1.3(1) recall (reference: perfect classifier = 1)"].target == 0.95


def test_office_reader_benchmark_checks_what_each_reader_finds() -> None:
    import office_reader

    result = office_reader.run(1)
    docx, xlsx = result["rows"]["docx"]["readers"], result["rows"]["xlsx"]["readers"]
    assert docx["qnprov"]["missing"] == [] and xlsx["qnprov"]["missing"] == []
    assert docx["python-docx"]["missing"] == [office_reader.TEXTBOX]  # the API skips text boxes
    assert docx["python-docx + text boxes"]["missing"] == []
    assert xlsx["openpyxl read-only"]["missing"] == [office_reader.SHEET_HEADER]
    assert xlsx["openpyxl full"]["missing"] == []
    speed = [goal for goal in result["goals"] if "CPU time" in goal.what]
    assert [(goal.target, goal.at_most) for goal in speed] == [(4.0, False), (1.0, False)]
    assert speed[0].figure == docx["python-docx"]["ratio_to_qnprov"] > 0


def test_pdf_reader_benchmark_reads_the_same_lines_with_both_parsers() -> None:
    import pdf_reader

    result = pdf_reader.run(1)
    for row in result["rows"].values():
        assert all(reading["missing"] == [] for reading in row["readers"].values())
    ratios = [goal for goal in result["goals"] if "CPU time" in goal.what]
    assert [goal.target for goal in ratios] == [10.0, 10.0] and all(goal.figure > 0 for goal in ratios)


def test_converge_percentiles_and_profile() -> None:
    import converge

    from qnprov import runner

    assert converge.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert converge.percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert converge.percentile([0.5], 99) == 0.5
    with pytest.raises(ValueError):
        converge.percentile([], 50)
    result = runner.PlaybookResult(rc=0, status="successful", task_seconds=[
        ("mail1", "a", 0.2), ("mail1", "b", 0.1), ("mail1", "c", 3.0), ("mail1", "d", 0.3)])
    profile = converge.task_profile(result, top=2)
    assert (profile["tasks"], profile["p50_seconds"], profile["p99_seconds"]) == (4, 0.2, 3.0)
    assert [row["task"] for row in profile["slowest"]] == ["c", "d"]


def test_converge_benchmark_host_has_its_own_ports_and_state(tmp_path: Path) -> None:
    import converge
    import yaml

    from qnprov import lab

    config = converge.bench_inventory(lab.load_lab_config(lab.LAB_INVENTORY), tmp_path, container="bench-m1",
                                      port_base=40000)
    host = config.hosts[0]
    assert host.container == "bench-m1"
    assert host.publish["ssh"] == (40022, 22) and host.publish["smtp"] == (40025, 25)
    assert config.state == tmp_path / "state"
    written = yaml.safe_load((config.inventory / "hosts.yml").read_text())["all"]["hosts"]["mail1"]
    assert written["qnprov_lab_container"] == "bench-m1"
    assert written["qnprov_lab_publish"]["ssh"] == [40022, 22]
    assert lab.load_lab_config(config.inventory).hosts[0].publish == host.publish


def test_ldap_replication_benchmark_measures_both_directions() -> None:
    """A short run on two real providers: every write is seen on the peer, both ways."""
    import ldap_replication

    figures = ldap_replication.run(10)
    assert figures["writes"] == 10
    for name in ("reference_write_read_p50_ms", "lag_p50_ms", "lag_p99_ms", "lag_1->2_p50_ms", "lag_2->1_p50_ms",
                 "write_to_visible_on_peer_p50_ms"):
        assert float(figures[name]) > 0, name  # type: ignore[arg-type]
    assert float(figures["lag_p99_ms"]) >= float(figures["lag_p50_ms"])  # type: ignore[arg-type]
    ratio = float(figures["write_to_visible_on_peer_p50_ms"]) / float(figures["reference_write_read_p50_ms"])  # type: ignore[arg-type]
    assert figures["ratio_peer_to_local_p50"] == pytest.approx(ratio, rel=0.05, abs=0.01)
    lag, ratio_goal = ldap_replication.goals_of(figures)
    assert (lag.target, lag.unit, ratio_goal.target) == (2000.0, "ms", 5.0)
    assert ldap_replication.percentile([float(v) for v in range(1, 201)], 0.99) == 198.0


def test_dayday_variants_keep_the_lab_inventory_and_change_one_override(tmp_path: Path) -> None:
    import dayday

    from qnprov import inventory, paths
    from qnprov.push.files import policy_files

    base = paths.INVENTORIES_DIR / "lab"
    copies = [dayday.variant(base, tmp_path, verdict) for verdict in ("tempfail", "quarantine")]
    rendered = [{Path(f.path).name: f.content for f in policy_files(inventory.load(c), "mail1").files}
                for c in copies]
    assert rendered[0]["overrides.yml"] == b"failure_verdict: tempfail\nlocal_domains:\n- quangninh.test\n"
    assert rendered[1]["overrides.yml"] == b"failure_verdict: quarantine\nlocal_domains:\n- quangninh.test\n"
    assert rendered[0]["agencies.yml"] == rendered[1]["agencies.yml"] == b"'@quangninh.test': SKHCN\n"


def test_ha_drill_goals_count_every_drill_and_the_lags() -> None:
    from qnprov.labclient import DrillResult

    good = DrillResult("mta-down", passed=True, sent=90, accepted=90, delivered=90)
    lossy = DrillResult("store-down", passed=False, sent=60, accepted=60, delivered=58, duplicates=1, lost=2,
                        timings={"login_restored_seconds": 71.234})
    figures, checks = ha_drill.summarise([good, lossy], [0.01] * 98 + [0.5, 3.0], [0.4, 0.6, 1.2], 1500.0, 600.0)
    assert [g.line() for g in checks] == [
        "mta-down: passed: 1 (goal >= 1, met)",
        "mta-down: accepted - delivered: 0 (goal <= 0, met)",
        "mta-down: duplicates + bounces + lost: 0 (goal <= 0, met)",
        "store-down: passed: 0 (goal >= 1, not met)",
        "store-down: accepted - delivered: 2 (goal <= 0, not met)",
        "store-down: duplicates + bounces + lost: 3 (goal <= 0, not met)",
        "store stop to login through failover: 71.23 s (goal <= 60 s, not met)",
        "ldap replication lag p99: 0.5 s (goal <= 2 s, met)",
        "dsync replication lag p99: 1.2 s (goal <= 10 s, met)",
        "lab-ha converge / single-host first converge: 2.5 (goal <= 2, not met)",
    ]
    assert figures["ldap replication lag"]["p50_seconds"] == 0.01 and figures["dsync replication lag"]["samples"] == 3
    assert [d["name"] for d in figures["drills"]] == ["mta-down", "store-down"]
    assert ha_drill.percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_ha_drill_takes_the_converge_time_only_from_a_first_converge() -> None:
    """A re-converge of a running lab-ha is not comparable with the single host's first converge."""
    first = {"first_converge": True, "timings": {"converge": 552.8}}
    again = {"first_converge": False, "timings": {"converge": 534.3}}
    older = {"timings": {"converge": 400.0}}  # a lab.json written before the field existed
    assert ha_drill.first_converge_seconds(first) == 552.8
    assert ha_drill.first_converge_seconds(again) is None
    assert ha_drill.first_converge_seconds(older) is None
