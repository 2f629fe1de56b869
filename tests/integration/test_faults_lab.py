"""Faults on the deployed lab (issue 5): the directory goes away, a bad value is deployed,
the host reboots. Nothing is bounced or lost, nothing half-configured goes live, and
everything comes back.

Traffic goes to the lab's published loopback ports; services are stopped, started and
inspected inside the container with ``podman exec``. The restart test runs last in this
module and leaves the lab running.
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from labenv import OUTSIDE_RETRY_DEADLINE, date_header, require_env, send_from_outside

from qnprov import lab, paths, testbed
from qnprov.lab import SERVICES

pytestmark = pytest.mark.lab

TIMEOUT = 60.0
LAB_WAIVERS = Path(__file__).with_name("lab-waivers.yml")


def _exec(container: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", "exec", container, *argv], capture_output=True, text=True, check=False,
                            timeout=180)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed in {container}: {result.stderr[-800:]}", pytrace=False)
    return result


@pytest.fixture(scope="module")
def container() -> str:
    return require_env("QNPROV_TEST_HOST")


@pytest.fixture(scope="module")
def endpoints() -> dict[str, tuple[str, int]]:
    raw = json.loads(require_env("QNPROV_TEST_ENDPOINTS"))
    return {name: (str(v).rpartition(":")[0] or "127.0.0.1", int(str(v).rpartition(":")[2])) for name, v in raw.items()}


@pytest.fixture(scope="module")
def accounts() -> list[tuple[str, str]]:
    return [(a["address"], a["password"]) for a in json.loads(require_env("QNPROV_TEST_ACCOUNTS"))]


@pytest.fixture(scope="module")
def tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=require_env("QNPROV_TEST_CA"))


def _message(sender: str, recipient: str, token: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"qnprov fault test {token[:8]}"
    message["Message-ID"] = f"<{token}@faults.example.org>"
    message["Date"] = date_header()
    message.set_content(f"Fault test {token}.\n")
    return message


def _send_from_outside(endpoints: dict[str, tuple[str, int]], message: EmailMessage, *,
                       deadline: float = OUTSIDE_RETRY_DEADLINE) -> int:
    host, port = endpoints["smtp"]
    return send_from_outside(host, port, message["From"], [message["To"]], message.as_bytes(policy=SMTP),
                             deadline=deadline)


def _fetch(endpoints: dict[str, tuple[str, int]], tls: ssl.SSLContext, account: tuple[str, str],
           token: str) -> bytes:
    host, port = endpoints["imaps"]
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with imaplib.IMAP4_SSL(host, port, ssl_context=tls) as imap:
            imap.login(*account)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "HEADER", "Message-ID", token)
            ids = found[0].split() if found and found[0] else []
            if ids:
                _, data = imap.fetch(ids[-1], "(BODY.PEEK[])")
                return next(bytes(item[1]) for item in data if isinstance(item, tuple))
        time.sleep(1)
    pytest.fail(f"{token} did not reach {account[0]} within {TIMEOUT:.0f}s", pytrace=False)


def _wait_active(container: str, units: tuple[str, ...], timeout: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        result = _exec(container, "systemctl", "is-active", *units, check=False)
        states = dict(zip(units, result.stdout.split(), strict=False))
        if all(states.get(unit) == "active" for unit in units):
            return states
        time.sleep(1)
    return states


@pytest.mark.mailflow  # the conftest's no-silent-loss check runs afterwards
def test_slapd_stopped_mail_is_deferred_never_bounced_then_delivered(container, endpoints, tls,  # type: ignore[no-untyped-def]
                                                                   accounts) -> None:
    recipient = accounts[1]
    token = uuid.uuid4().hex
    since = _exec(container, "date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    message = _message(f"fault-{token[:8]}@example.org", recipient[0], token)
    _exec(container, "systemctl", "stop", "slapd")
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            _send_from_outside(endpoints, message, deadline=0)
        codes = [code for code, _ in refused.value.recipients.values()]
        assert codes and all(400 <= code < 500 for code in codes), refused.value.recipients
    finally:
        _exec(container, "systemctl", "start", "slapd")
    assert _wait_active(container, ("slapd",)) == {"slapd": "active"}
    # The sending server retries, as any MTA does after a 4xx; Postfix's own first retry
    # comes after minimal_backoff_time (300 s). smtpd caches an address resolution,
    # failed ones included, per (sender, recipient) for the life of the process, so a
    # retry within seconds, served by the same idle smtpd, would get 451 again. The
    # retry comes once that smtpd has exited (max_idle without a connection).
    max_idle = int(_exec(container, "postconf", "-h", "max_idle").stdout.strip().rstrip("s"))
    time.sleep(max_idle + 10)
    # Any reply but 250 now is a failure; a 4xx is retried for a bounded time, as an MTA would.
    _send_from_outside(endpoints, message)
    _fetch(endpoints, tls, recipient, token)
    log = _exec(container, "journalctl", "--no-pager", "-o", "short", "--since", since, "-u", "postfix@-").stdout
    assert "status=bounced" not in log, log[-2000:]
    assert "MAILER-DAEMON" not in _exec(container, "postqueue", "-p").stdout


def _lab_inventory_copy(tmp_path: Path, host_vars: dict[str, object]) -> Path:
    inventory = tmp_path / "inventory"
    shutil.copytree(paths.PROJECT_ROOT / "inventories" / "lab", inventory)
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "mail1.yml").write_text(json.dumps(host_vars), encoding="utf-8")
    return inventory


def test_invalid_template_value_is_refused_before_reload(container, endpoints, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A value that passes the argument specs but not Postfix's own checks never goes live."""
    before = _exec(container, "sha256sum", "/etc/postfix/main.cf").stdout.split()[0]
    master_pid = _exec(container, "systemctl", "show", "-p", "MainPID", "--value", "postfix@-").stdout.strip()
    inventory = _lab_inventory_copy(tmp_path, {"postfix_main_cf_extra": {"smtpd_tls_auth_onyl": "yes"}})
    deploy = subprocess.run(
        [sys.executable, "-m", "qnprov", "deploy", "-i", str(inventory), "--tags", "postfix-config", "--json"],
        capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=900, check=False,
        env={**os.environ, "QNPROV_STATE_DIR": require_env("QNPROV_STATE_DIR")})
    assert deploy.returncode != 0, f"deploy accepted a misspelt Postfix parameter: {deploy.stdout[-1500:]}"
    doc = json.loads(deploy.stdout)
    assert doc["hosts"]["mail1"]["failed"] >= 1, doc
    assert _exec(container, "sha256sum", "/etc/postfix/main.cf").stdout.split()[0] == before, "main.cf was replaced"
    # Nothing of the refused change stays in staging, where the next run (or a dry run)
    # would compare against it and report changes that are not there.
    staged = _exec(container, "sha256sum", "/etc/postfix/.staging/main.cf").stdout.split()[0]
    assert staged == before, "the refused main.cf stayed in staging"
    assert "smtpd_tls_auth_onyl" not in _exec(container, "postconf", "-n").stdout
    after_pid = _exec(container, "systemctl", "show", "-p", "MainPID", "--value", "postfix@-").stdout.strip()
    assert after_pid == master_pid, "Postfix was restarted by a failed deploy"
    host, port = endpoints["smtp"]
    with smtplib.SMTP(host, port, local_hostname="mx.example.org", timeout=TIMEOUT) as client:
        assert client.noop()[0] == 250


def test_container_restart_every_service_returns_and_verify_stays_green(container, endpoints, tls,  # type: ignore[no-untyped-def]
                                                                       accounts, tmp_path) -> None:
    subprocess.run(["podman", "restart", "--time", "60", container], check=True, capture_output=True, timeout=300)
    testbed.wait_for_systemd(container, timeout=180)
    states = _wait_active(container, SERVICES, timeout=180)
    assert all(states.get(unit) == "active" for unit in SERVICES), states
    # Mail flows again: submission, the policy milter, LMTP, IMAP.
    sender, recipient = accounts[0], accounts[1]
    token = uuid.uuid4().hex
    host, port = endpoints["submission"]
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
                client.starttls(context=tls)
                client.login(*sender)
                client.send_message(_message(sender[0], recipient[0], token))
            break
        except (smtplib.SMTPException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    _fetch(endpoints, tls, recipient, token)
    verify = subprocess.run(
        [sys.executable, "-m", "qnprov", "verify", "-i", str(lab.default_inventory()), "--no-scanners", "--json",
         "--waivers", str(LAB_WAIVERS), "--results", str(tmp_path / "verify.json")],
        capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=600, check=False)
    doc = json.loads(verify.stdout)
    bad = [(c["id"], c["status"], c["detail"][:300]) for c in doc["controls"] if c["status"] in ("fail", "error")]
    assert verify.returncode == 0 and not bad, bad or verify.stderr[-2000:]
