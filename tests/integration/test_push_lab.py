"""qnprov push on the lab (issue 12): the two engines agree, blocks work through real Postfix.

Everything goes through the project's own commands (``qnprov push ... --json``,
``qnprov deploy ... --json``) against the lab inventory, or a copy of it in a temporary
directory with one more ``group_vars/all`` file (a changed override), so the lab's own
inventory is never edited. Files are compared by sha256 *on the host*; mail goes to the
lab's published submission port (authenticated, so rspamd's greylisting of unknown
outside senders does not stand between the message and the milter).

Order matters and is the file's order: the first test runs right after the session's
converge (a full deploy).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from labenv import date_header
from labenv import require_env as _env

from qnprov import inventory, lab, paths
from qnprov.push.files import policy_files
from qnprov_testing.cli import qnprov_json

pytestmark = [pytest.mark.lab]

POLICY = "/etc/qnprov/policy"
MANAGED = [f"{POLICY}/overrides.yml", f"{POLICY}/agencies.yml", f"{POLICY}/blocklist.yml"]
AUDIT_DIR = "/var/log/qnprov/audit"
DEPLOY_TIMEOUT = 1800


@pytest.fixture(scope="module")
def lab_inventory() -> Path:
    return lab.load_lab_config().inventory


@pytest.fixture(scope="module")
def container() -> str:
    return _env("QNPROV_TEST_HOST")


def _qnprov(*argv: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], dict]:
    return qnprov_json(*argv, timeout=timeout)


def _exec(container: str, *argv: str) -> str:
    done = subprocess.run(["podman", "exec", container, *argv], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def _host_sha(container: str) -> dict[str, str]:
    lines = _exec(container, "sha256sum", *MANAGED).splitlines()
    return {line.split()[1]: line.split()[0] for line in lines}


def _milter(container: str) -> tuple[str, str]:
    state = subprocess.run(["podman", "exec", container, "systemctl", "is-active", "qnprov-milter"],
                           capture_output=True, text=True, check=False).stdout.strip()
    pid = _exec(container, "systemctl", "show", "-p", "MainPID", "--value", "qnprov-milter").strip()
    return state, pid


def _variant(lab_inventory: Path, tmp_path: Path, overrides_yaml: str) -> Path:
    """The lab inventory with one more group_vars/all file (a site override)."""
    copy = tmp_path / "inventory"
    shutil.copytree(lab_inventory, copy)
    (copy / "group_vars" / "all" / "zz_push_test.yml").write_text("---\n" + overrides_yaml, encoding="utf-8")
    return copy


def _rendered_sha(inv: Path) -> dict[str, str]:
    files = policy_files(inventory.load(inv), "mail1")
    return {f.path: hashlib.sha256(f.content).hexdigest() for f in files.files if not f.create_only}


OVERRIDE_A = ("qnprov_milter_overrides:\n  local_domains: \"{{ qnprov_hosted_domains | default([qnprov_domain]) }}\"\n"
              "  failure_verdict: tempfail\n")
OVERRIDE_B = ("qnprov_milter_overrides:\n  local_domains: \"{{ qnprov_hosted_domains | default([qnprov_domain]) }}\"\n"
              "  failure_verdict: quarantine\n")
OVERRIDE_BAD = "qnprov_milter_overrides:\n  failure_verdict: explode\n"


def test_push_after_the_converge_changes_nothing(lab_inventory: Path, container: str) -> None:
    proc, doc = _qnprov("push", "policy", "-i", str(lab_inventory))
    assert proc.returncode == 0, proc.stderr
    assert doc["summary"] == {"changed": [], "unchanged": ["mail1"], "failed": []}
    assert doc["hosts"]["mail1"]["changed_files"] == [] and doc["hosts"]["mail1"]["action"] is None
    rendered = _rendered_sha(lab_inventory)
    on_host = _host_sha(container)
    assert {path: on_host[path] for path in rendered} == rendered  # what Ansible wrote is what push renders


@pytest.fixture()
def restore_lab_policy(lab_inventory: Path, container: str) -> Iterator[None]:
    yield
    proc, doc = _qnprov("push", "policy", "-i", str(lab_inventory))
    assert proc.returncode == 0 and not doc["summary"]["failed"], doc
    on_host = _host_sha(container)
    assert all(on_host[p] == s for p, s in _rendered_sha(lab_inventory).items())


def test_a_pushed_override_is_what_deploy_would_write(lab_inventory: Path, container: str, tmp_path: Path,
                                                      restore_lab_policy: None) -> None:
    variant = _variant(lab_inventory, tmp_path, OVERRIDE_A)
    _, pid_before = _milter(container)
    proc, doc = _qnprov("push", "policy", "-i", str(variant))
    assert proc.returncode == 0, proc.stderr
    host = doc["hosts"]["mail1"]
    assert (host["status"], host["changed_files"], host["action"]) == ("changed", [f"{POLICY}/overrides.yml"],
                                                                       "reload")
    assert _milter(container) == ("active", pid_before)  # reloaded (SIGHUP), not restarted
    assert _host_sha(container)[f"{POLICY}/overrides.yml"] == _rendered_sha(variant)[f"{POLICY}/overrides.yml"]
    assert "failure_verdict: tempfail" in _exec(container, "cat", f"{POLICY}/overrides.yml")
    # The other engine, asked about the same variables, finds nothing to do: not one task
    # of the site reports a change in check mode (the role's pip tasks used to, whatever
    # the host held: Ansible's pip module says "changed" in check mode when extra_args
    # are given; the role now asks pip's own dry run instead).
    proc, deploy = _qnprov("deploy", "-i", str(variant), "--check", timeout=DEPLOY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    changed = {entry["task"] for entry in deploy["changed_tasks"]}
    assert changed == set(), changed
    assert deploy["hosts"]["mail1"]["changed"] == len(changed)


def test_what_deploy_writes_a_push_finds_converged(lab_inventory: Path, container: str, tmp_path: Path,
                                                   restore_lab_policy: None) -> None:
    variant = _variant(lab_inventory, tmp_path, OVERRIDE_B)
    proc, deploy = _qnprov("deploy", "-i", str(variant), "--tags", "qnprov_milter-policy", timeout=DEPLOY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    changed = sorted(entry["task"] for entry in deploy["changed_tasks"])
    assert changed == ["Reload the milter (SIGHUP; open connections stay)",
                       "Write the site overrides (validated by the milter itself)"], changed
    written = _host_sha(container)[f"{POLICY}/overrides.yml"]
    assert written == _rendered_sha(variant)[f"{POLICY}/overrides.yml"]  # byte-identical, both engines
    proc, doc = _qnprov("push", "policy", "-i", str(variant))
    assert proc.returncode == 0, proc.stderr
    assert doc["summary"]["unchanged"] == ["mail1"] and doc["hosts"]["mail1"]["changed_files"] == []


def test_an_invalid_override_is_refused_and_the_host_keeps_working(lab_inventory: Path, container: str,
                                                                    tmp_path: Path) -> None:
    before = _host_sha(container)
    state, pid = _milter(container)
    assert state == "active"
    variant = _variant(lab_inventory, tmp_path, OVERRIDE_BAD)
    proc, doc = _qnprov("push", "policy", "-i", str(variant))
    assert proc.returncode == 1
    host = doc["hosts"]["mail1"]
    assert host["status"] == "failed" and doc["summary"]["failed"] == ["mail1"]
    assert "refused by the milter's check" in host["message"] and "failure_verdict" in host["message"]
    assert _host_sha(container) == before
    assert _milter(container) == ("active", pid)
    assert "qnprov-new" not in _exec(container, "ls", "-a", "/etc/qnprov")


# --- emergency blocks through real Postfix ---------------------------------------------


@pytest.fixture(scope="module")
def account() -> tuple[str, str, str]:
    found = json.loads(_env("QNPROV_TEST_ACCOUNTS"))
    return found[0]["address"], found[0]["password"], found[1]["address"]


@pytest.fixture(scope="module")
def submission() -> tuple[str, int]:
    value = json.loads(_env("QNPROV_TEST_ENDPOINTS"))["submission"]
    host, _, port = str(value).rpartition(":")
    return host or "127.0.0.1", int(port)


def _submit(submission: tuple[str, int], account: tuple[str, str, str], token: str) -> None:
    sender, password, recipient = account
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, recipient, f"push block test {token}"
    message["Date"], message["Message-ID"] = date_header(), make_msgid(domain="quangninh.test")
    message.set_content(f"Kiem tra chan khan cap {token}.\n")
    with smtplib.SMTP(*submission, timeout=60) as client:
        client.starttls(context=ssl.create_default_context(cafile=_env("QNPROV_TEST_CA")))
        client.login(sender, password)
        client.send_message(message)


def _refused(submission: tuple[str, int], account: tuple[str, str, str], token: str) -> str:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _submit(submission, account, token)
    assert refused.value.smtp_code == 550, refused.value
    return refused.value.smtp_error.decode("utf-8", "replace")


@pytest.fixture()
def unblocked(lab_inventory: Path, account: tuple[str, str, str]) -> Iterator[None]:
    yield
    _qnprov("push", "unblock", "-i", str(lab_inventory), account[0], "--expired")


@pytest.mark.mailflow
def test_block_rejects_with_the_reason_is_audited_and_unblock_lets_mail_through(
        lab_inventory: Path, container: str, account: tuple[str, str, str], submission: tuple[str, int],
        unblocked: None) -> None:
    token = uuid.uuid4().hex[:10]
    started = time.monotonic()
    proc, doc = _qnprov("push", "block", "-i", str(lab_inventory), account[0].upper(), "--reason", f"INC-{token}")
    assert proc.returncode == 0, proc.stderr
    assert doc["hosts"]["mail1"]["changed_files"] == [f"{POLICY}/blocklist.yml"]
    assert doc["hosts"]["mail1"]["action"] == "reload"
    reply = _refused(submission, account, token)
    print(f"push block to first rejection: {time.monotonic() - started:.2f}s")
    assert f"INC-{token}" in reply and "blocked" in reply
    audit = [json.loads(line) for line in _exec(container, "sh", "-c", f"cat {AUDIT_DIR}/audit-*.jsonl").splitlines()
             if f"INC-{token}" in line]
    assert [(r["verdict"], r["rule"], r["sender"]) for r in audit] == [("reject", "emergency-block", account[0])]
    assert audit[0]["evidence"].startswith(f"envelope sender {account[0]} matches block")
    verified = subprocess.run(["podman", "exec", container, "/opt/qnprov/venv/bin/python", "-m",
                               "qnprov.policy.milter_cli", "audit", "verify", AUDIT_DIR],
                              capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    proc, doc = _qnprov("push", "unblock", "-i", str(lab_inventory), account[0])
    assert proc.returncode == 0 and doc["hosts"]["mail1"]["status"] == "changed", doc
    _submit(submission, account, token)  # accepted again (no exception)
    assert _exec(container, "cat", f"{POLICY}/blocklist.yml") == "blocks: []\n"


@pytest.mark.mailflow
def test_a_block_expires_by_itself(lab_inventory: Path, account: tuple[str, str, str],
                                   submission: tuple[str, int], unblocked: None) -> None:
    token = uuid.uuid4().hex[:10]
    proc, _ = _qnprov("push", "block", "-i", str(lab_inventory), account[0], "--reason", f"short-{token}",
                        "--expires", "25s")
    assert proc.returncode == 0, proc.stderr
    expires = time.monotonic() + 25
    assert f"short-{token}" in _refused(submission, account, token)
    time.sleep(max(0.0, expires - time.monotonic()) + 2)
    _submit(submission, account, token)  # no push in between: the milter ignores the expired entry
    # An expiry already past blocks nothing from the start.
    proc, _ = _qnprov("push", "block", "-i", str(lab_inventory), account[0], "--reason", "past", "--expires",
                      "2020-01-01T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    _submit(submission, account, token)


def test_a_malformed_target_changes_no_host(lab_inventory: Path, container: str) -> None:
    before = _host_sha(container)
    proc = subprocess.run([sys.executable, "-m", "qnprov", "push", "block", "-i", str(lab_inventory),
                           "x@-bad.example", "--reason", "r"], capture_output=True, text=True,
                          cwd=paths.PROJECT_ROOT, check=False)
    assert proc.returncode != 0
    assert "domain label '-bad'" in proc.stderr
    assert _host_sha(container) == before
