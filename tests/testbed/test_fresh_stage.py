"""The fresh-machine stage driver (scripts/fresh-stage.py, qnprov.freshstage.run_fresh_stage).

What it selects, how it judges a pytest run (real pytest runs, real JUnit reports), which
files it copies, and that the container it tests in has loopback only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qnprov import freshstage, paths, testbed
from qnprov_testing.containers import exec_in, plain_container


def _pytest_step(tmp_path: Path, body: str | None) -> tuple[freshstage.FreshStep, int, freshstage.JunitCounts | None]:
    """Run a real pytest on a directory holding ``body`` (or nothing) as the stage would."""
    suite = tmp_path / "suite"
    suite.mkdir(parents=True)
    (suite / "pytest.ini").write_text("[pytest]\n")
    if body is not None:
        (suite / "test_probe.py").write_text(body)
    junit = tmp_path / "report.xml"
    step = freshstage.FreshStep("probe", (), junit=str(junit))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(junit),
                           "--rootdir", str(suite), "-c", str(suite / "pytest.ini"), str(suite)],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    counts = freshstage.junit_counts(junit.read_text()) if junit.exists() else None
    return step, proc.returncode, counts


def test_selection_is_every_container_free_test_directory():
    files = freshstage.tracked_files(paths.PROJECT_ROOT)
    selected = freshstage.fresh_test_dirs(files)
    assert selected == ["tests/backup", "tests/controls", "tests/directory", "tests/policy", "tests/reporting",
                        "tests/unit"]
    # Every test directory is either run by the stage or explicitly needs containers.
    with_tests = {f.split("/")[1] for f in files if f.startswith("tests/") and f.count("/") >= 2
                  and Path(f).name.startswith("test_")}
    assert with_tests == {d.split("/")[1] for d in selected} | freshstage.CONTAINER_TEST_DIRS


def test_steps_bootstrap_first_and_only_it_has_network():
    steps = freshstage.fresh_steps(["tests/unit", "tests/policy"])
    assert [s.name for s in steps] == ["bootstrap", "lint", "tests/unit", "tests/policy"]
    assert [s.network for s in steps] == [True, False, False, False]
    assert steps[0].argv == ("./scripts/bootstrap.sh",)
    assert steps[2].argv[0] == ".venv/bin/pytest" and steps[2].argv[-1] == "tests/unit"
    assert steps[2].junit != steps[3].junit


def test_pytest_collecting_nothing_fails_the_step(tmp_path: Path):
    step, rc, counts = _pytest_step(tmp_path, None)
    assert rc == freshstage.PYTEST_NO_TESTS
    assert freshstage.step_verdict(step, rc, counts) == "FAILED: pytest collected no tests (exit 5)"


# Inputs for the guard's own tests: throwaway suites, written to tmp_path, whose tests skip
# (one by a mark, one at run time) so that the guard has an all-skipped run to refuse.
SKIP_BY_MARK = "@pytest.mark.skipif(True, reason='guard input')\ndef test_a():\n    pass\n"
SKIP_AT_RUN_TIME = "def test_b():\n    pytest.importorskip('qnprov_guard_input_absent')\n"


def test_pytest_where_every_test_skips_fails_the_step(tmp_path: Path):
    step, rc, counts = _pytest_step(tmp_path, f"import pytest\n\n{SKIP_BY_MARK}\n{SKIP_AT_RUN_TIME}")
    assert rc == 0
    assert counts == freshstage.JunitCounts(tests=2, failures=0, errors=0, skipped=2)
    assert freshstage.step_verdict(step, rc, counts) == "FAILED: all 2 tests skipped, none ran"


def test_pytest_results_are_counted_and_judged(tmp_path: Path):
    step, rc, counts = _pytest_step(tmp_path, "import pytest\n\ndef test_ok():\n    assert 1\n\n"
                                              "def test_bad():\n    assert 0\n\n"
                                              f"{SKIP_AT_RUN_TIME}")
    assert rc == 1
    assert counts == freshstage.JunitCounts(tests=3, failures=1, errors=0, skipped=1)
    assert (counts.passed, counts.ran) == (1, 2)
    assert freshstage.step_verdict(step, rc, counts) == "FAILED (exit 1)"
    step, rc, counts = _pytest_step(tmp_path / "again", "def test_ok():\n    assert 1\n")
    assert (rc, freshstage.step_verdict(step, rc, counts)) == (0, "passed")


def test_summary_names_every_step_with_its_time_and_counts():
    steps = freshstage.fresh_steps(["tests/unit"])
    results = [freshstage.StepResult(steps[0], 0, 200.0, verdict="passed"),
               freshstage.StepResult(steps[1], 2, 50.0, verdict="FAILED (exit 2)"),
               freshstage.StepResult(steps[2], 0, 30.0, freshstage.JunitCounts(10, 0, 0, 1), verdict="passed")]
    text = freshstage.format_fresh_summary(results, setup_seconds=12.5, total_seconds=292.5)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["container", "setup", "12.5s"]
    assert lines[2].split()[:3] == ["bootstrap", "200.0s", "passed"]
    assert lines[3].split()[:4] == ["lint", "50.0s", "FAILED", "(exit"]
    assert lines[4].split() == ["tests/unit", "30.0s", "passed", "9", "passed,", "0", "failed,", "0", "errors,",
                                "1", "skipped"]
    assert lines[5].split() == ["total", "292.5s", "FAILED"]


def test_tracked_files_are_the_working_tree_of_tracked_files_only(tmp_path: Path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    for name in ("kept.txt", "edited.txt", "deleted.txt"):
        (tmp_path / name).write_text("committed\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-qm", "c")
    (tmp_path / "edited.txt").write_text("uncommitted edit\n")
    (tmp_path / "deleted.txt").unlink()
    (tmp_path / "untracked.txt").write_text("must not leak\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x").write_text("")
    assert sorted(freshstage.tracked_files(tmp_path)) == ["edited.txt", "kept.txt"]


@pytest.fixture()
def container():
    with plain_container(f"{freshstage.FRESH_PREFIX}test-") as name:
        yield name


_in = exec_in


def test_the_tree_is_copied_and_the_container_is_taken_off_the_network(container: str, tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("Quảng Ninh\n")
    (tmp_path / "b.sh").write_text("#!/bin/sh\n")
    (tmp_path / "b.sh").chmod(0o755)
    (tmp_path / "secret.txt").write_text("not listed\n")
    freshstage.copy_tree(container, tmp_path, ["sub/a.txt", "b.sh"], workdir="/root/tree")
    listing = _in(container, "find", "/root/tree", "-type", "f", "-printf", "%P %m\n").stdout.split("\n")
    assert sorted(line for line in listing if line) == ["b.sh 755", "sub/a.txt 644"]
    assert _in(container, "cat", "/root/tree/sub/a.txt").stdout == "Quảng Ninh\n"

    assert "eth0" in _in(container, "ls", "/sys/class/net").stdout.split()
    freshstage.isolate_network(container)
    assert _in(container, "ls", "/sys/class/net").stdout.split() == ["lo"]
    freshstage.isolate_network(container)  # already isolated: nothing to disconnect, still only loopback


def _self_signed_ca(common_name: str) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_the_hosts_local_cas_are_trusted_in_the_container_and_nothing_else_of_pip(container: str, tmp_path: Path):
    ca_dir = tmp_path / "ca-certificates"
    (ca_dir / "corp").mkdir(parents=True)
    pem = _self_signed_ca("qnprov fresh-stage test gateway CA")
    (ca_dir / "corp" / "gateway.crt").write_bytes(pem)
    (ca_dir / "README").write_text("not a certificate\n")
    before = _in(container, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    assert pem.decode().strip() not in before
    assert _in(container, "test", "-e", "/etc/pip.conf").returncode == 1

    assert freshstage.share_host_trust(container, ca_dir) == ["corp/gateway.crt"]
    bundle = _in(container, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    assert pem.decode().strip() in bundle
    assert _in(container, "cat", "/etc/pip.conf").stdout == "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
    # openssl in the container now verifies a certificate that CA signed (itself, here).
    target = str(ca_dir / "corp" / "gateway.crt")
    verify = _in(container, "openssl", "verify", "-CAfile", "/etc/ssl/certs/ca-certificates.crt",
                 target.replace(str(ca_dir), "/usr/local/share/ca-certificates"))
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK")


def test_no_local_ca_means_nothing_is_changed(container: str, tmp_path: Path):
    assert freshstage.share_host_trust(container, tmp_path / "absent") == []
    assert _in(container, "test", "-e", "/etc/pip.conf").returncode == 1


GUARD = paths.PROJECT_ROOT / "scripts" / "pytest-guard.py"


@pytest.mark.parametrize(("body", "rc", "verdict"), [
    (None, 5, "FAILED: pytest collected no tests (exit 5)"),
    (f"import pytest\n\n{SKIP_AT_RUN_TIME}", 1,
     "FAILED: all 1 tests skipped, none ran"),
    ("def test_a():\n    assert 1 + 1 == 2\n", 0, "passed"),
])
def test_make_tests_pytest_guard_fails_a_run_that_ran_nothing(tmp_path: Path, body: str | None, rc: int,
                                                              verdict: str):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    if body is not None:
        (suite / "test_probe.py").write_text(body)
    proc = subprocess.run([sys.executable, str(GUARD), "-q", "-p", "no:cacheprovider", "-c", str(suite / "pytest.ini"),
                           "--rootdir", str(suite), str(suite)], capture_output=True, text=True, cwd=tmp_path,
                          check=False)
    assert proc.returncode == rc
    assert proc.stderr.strip().splitlines()[-1] == f"pytest-guard: {verdict}"


def test_make_test_runs_pytest_through_the_guard_and_the_fresh_stage_first():
    import re

    makefile = (paths.PROJECT_ROOT / "Makefile").read_text()
    test_rule = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    prerequisites = test_rule.splitlines()[0].split()
    assert prerequisites == ["bootstrap", "lint"]
    # The recipe as the shell sees it: one string per recipe line, continuations joined.
    recipe = [" ".join(line.split()) for line in test_rule.split("\n", 1)[1].replace("\\\n", " ").splitlines()]
    text = "\n".join(recipe)
    # Every pytest run goes through the guard: the container directories, and lab-ha's
    # tests (with its own state directory and temporary directory).
    assert "pytest " not in text.replace("pytest-guard.py", "")
    guarded = [args.strip() for args in re.findall(r"pytest-guard\.py ([^;>]*)", text)]
    assert guarded == ["-p no:cacheprovider --basetemp=build/labha-tmp --durations=10 tests/labha",
                       "--durations=30 $(CONTAINER_TEST_DIRS)"]

    def at(fragment: str) -> int:
        return text.index(fragment)

    # The fresh stage (beside molecule) comes first; the single lab's first converge
    # starts once it has passed, and all three must be done before the host's tests.
    gate = at("[ $$rc -eq 0 ] && [ $$mrc -eq 0 ]")
    assert at("molecule test -s default") < at("scripts/fresh-stage.py") < at("qnprov lab up >") < gate
    assert at("wait $$mol") < gate and at("wait $$lab") < gate
    # lab-ha: its bring-up, then its tests, in one background job with its own state
    # directory, beside the container tests; the run fails when either fails.
    ha_job = next(line for line in recipe if "lab up -i lab-ha" in line)
    assert ha_job.startswith("( export QNPROV_STATE_DIR=$(LAB_HA_STATE);") and "& ha=$$!;" in ha_job
    assert ha_job.index("lab up -i lab-ha") < ha_job.index("tests/labha")
    assert gate < at("lab up -i lab-ha") < at("$(CONTAINER_TEST_DIRS); rc=$$?") < at("wait $$ha; harc=$$?")
    assert recipe[-1].endswith("; [ $$rc -eq 0 ] && [ $$harc -eq 0 ]")
    # The host runs exactly the directories the fresh stage leaves out: every test runs once.
    host_dirs = makefile.split("\nCONTAINER_TEST_DIRS :=", 1)[1].split("\n", 1)[0].split()
    assert {d.removeprefix("tests/") for d in [*host_dirs, "tests/labha"]} == freshstage.CONTAINER_TEST_DIRS
    fresh_dirs = freshstage.fresh_test_dirs(freshstage.tracked_files(paths.PROJECT_ROOT))
    assert not set(host_dirs) & set(fresh_dirs)
    assert "scripts/fresh-stage.py" in makefile.split("\nfresh-stage:", 1)[1].split("\n\n", 1)[0]


def test_a_stage_stopped_with_sigterm_removes_its_container():
    """make, CI or a developer may stop the stage mid-bootstrap; its container must not be left behind."""
    import re
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(paths.PROJECT_ROOT / "scripts" / "fresh-stage.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=paths.PROJECT_ROOT)
    assert proc.stdout is not None
    name = None
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            found = re.search(rf"container ({freshstage.FRESH_PREFIX}[0-9a-f]{{8}})", line)
            name = name or (found.group(1) if found else None)
            if line.startswith("===== fresh stage: bootstrap:") or time.monotonic() > deadline:
                break
        assert name is not None
        assert subprocess.run(["podman", "container", "exists", name], check=False).returncode == 0
        time.sleep(3)  # bootstrap is running inside it now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        assert subprocess.run(["podman", "container", "exists", name], check=False).returncode == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        if name:
            testbed.remove_container(name)
