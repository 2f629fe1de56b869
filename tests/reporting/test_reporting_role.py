"""roles/reporting: the monthly unit's command lines, rendered as Ansible renders them, really
write the previous month's reports (all formats, the per-agency ones too)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import yaml

from qnprov import paths
from qnprov_testing import audit_trails
from qnprov_testing.postfix import SmtpSink, make_workdir

ROLE = paths.ROLES_DIR / "reporting"
SERVICE = paths.TEMPLATES_DIR / "reporting" / "qnprov-compliance-report.service.j2"


def _render(variables: dict[str, object]) -> str:
    # Ansible's template module: trim_blocks on, lstrip_blocks off; `quote` is shlex.quote.
    environment = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True,  # noqa: S701 - a unit file
                                     undefined=jinja2.StrictUndefined)
    environment.filters["quote"] = shlex.quote
    return environment.from_string(SERVICE.read_text(encoding="utf-8")).render(**variables)


def _previous_month(today: dt.date) -> tuple[dt.date, dt.date]:
    first = today.replace(day=1)
    return (first - dt.timedelta(days=1)).replace(day=1), first


def test_the_monthly_service_writes_every_format_and_agency(tmp_path: Path) -> None:
    since, until = _previous_month(dt.datetime.now(dt.UTC).date())
    trails = audit_trails.generate(["mail1"], 300, since, (until - since).days, seed=3)
    audit_trails.write_trails(tmp_path / "audit", trails)
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    variables = {**defaults, "reporting_python": "/opt/qnprov/venv/bin/python", "reporting_user": "qnprov-milter",
                 "reporting_agencies": ["SYT"], "reporting_output_dir": str(tmp_path / "out"),
                 "reporting_trails": [{"host": "mail1", "path": str(tmp_path / "audit" / "mail1")}]}
    unit = _render(variables)
    starts = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(starts) == 6  # (all agencies + SYT) x (json, csv, html)
    assert [s.startswith("-") for s in starts] == [True] * 5 + [False]
    (tmp_path / "out").mkdir()
    for start in starts:
        argv = shlex.split(start.lstrip("-"))
        assert argv[:4] == ["/opt/qnprov/venv/bin/python", "-m", "qnprov.reporting.cli", "compliance"]
        done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=120,
                              check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    stem = f"compliance-{since}_{until}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{stem}{suffix}.{fmt}" for suffix in ("", "-SYT") for fmt in ("json", "csv", "html"))
    whole = json.loads((tmp_path / "out" / f"{stem}.json").read_text(encoding="utf-8"))
    syt = json.loads((tmp_path / "out" / f"{stem}-SYT.json").read_text(encoding="utf-8"))
    assert whole["totals"]["records_in_period"] == 300
    assert syt["totals"]["records_in_period"] == sum(1 for e in trails["mail1"] if e["agency"] == "SYT") > 0
    assert [row["agency"] for row in syt["agencies"]] == ["SYT"]
    assert '<html lang="vi">' in (tmp_path / "out" / f"{stem}.html").read_text(encoding="utf-8")


def test_a_broken_chain_fails_the_last_run(tmp_path: Path) -> None:
    since, until = _previous_month(dt.datetime.now(dt.UTC).date())
    audit_trails.write_trails(tmp_path / "audit", audit_trails.generate(["mail1"], 20, since, 1, seed=5))
    victim = next((tmp_path / "audit" / "mail1").iterdir())
    lines = victim.read_text(encoding="utf-8").splitlines(keepends=True)
    victim.write_text("".join(lines[:3] + lines[4:]), encoding="utf-8")  # line 4 deleted
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    unit = _render({**defaults, "reporting_python": "python", "reporting_user": "u",
                    "reporting_output_dir": str(tmp_path),
                    "reporting_trails": [{"host": "mail1", "path": str(tmp_path / "audit" / "mail1")}]})
    last = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")][-1]
    done = subprocess.run([sys.executable, *shlex.split(last)[1:]], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert f"audit chain of mail1 at {victim.name}:4" in done.stderr
    assert "BỊ HỎNG" in (tmp_path / f"compliance-{since}_{until}.html").read_text(encoding="utf-8")


def test_each_agency_head_gets_their_agency_alone_by_mail(tmp_path: Path) -> None:
    since, until = _previous_month(dt.datetime.now(dt.UTC).date())
    trails = audit_trails.generate(["mail1"], 200, since, (until - since).days, seed=9)
    audit_trails.write_trails(tmp_path / "audit", trails)
    workdir = make_workdir("qnprov-report-mail-")
    sink = SmtpSink(workdir).start()
    try:
        defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
        unit = _render({**defaults, "reporting_python": "python", "reporting_user": "u", "qnprov_domain": "qn.test",
                        "reporting_output_dir": str(tmp_path / "out"), "reporting_smtp": f"127.0.0.1:{sink.port}",
                        "reporting_mail": [{"agency": "SYT", "to": ["giamdoc@syt.qn.test", "vanthu@syt.qn.test"]}],
                        "reporting_mail_from": "qnprov-reports@qn.test",
                        "reporting_trails": [{"host": "mail1", "path": str(tmp_path / "audit" / "mail1")}]})
        assert "PrivateNetwork" not in unit and "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in unit
        starts = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
        assert len(starts) == 4 and "--mail-to" in starts[0]  # the mailed report first, then json, csv, html
        (tmp_path / "out").mkdir()
        for start in starts:
            done = subprocess.run([sys.executable, *shlex.split(start.lstrip("-"))[1:]], capture_output=True,
                                  text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
        (received,) = sink.wait_messages(1)
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert received.mail_from == "qnprov-reports@qn.test"
    assert received.rcpts == ["giamdoc@syt.qn.test", "vanthu@syt.qn.test"]
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    assert message["Subject"] == f"Báo cáo tuân thủ thư điện tử công vụ {since} – {until} · SYT"
    (attachment,) = list(message.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_filename() == f"compliance-{since}_{until}-SYT.html"
    html = attachment.get_content()
    assert 'data-agency="SYT"' in html
    assert 'data-agency="UBND"' not in html and 'data-agency="STTTT"' not in html  # only their agency
    written = (tmp_path / "out" / f"compliance-{since}_{until}-SYT.html").read_text(encoding="utf-8")
    assert html.replace("\r\n", "\n").rstrip("\n") == written.rstrip("\n")  # the wire has CRLF line ends
