"""Outbound abuse limits (issue 13) on the lab: rspamd's ratelimit module and the lab's
Redis, configured by the rspamd role's own templates, exercised through submission.

The test renders local.d/ratelimit.conf from the role's template (qnprov_testing.
rspamd_ratelimit, Ansible's templating) with low limits for a test agency that the first
lab account is moved into, validates it with the role's staged configtest, installs it
and reloads rspamd; afterwards it puts the deployed file back. Nothing is mocked: the
451 comes from rspamd's milter through Postfix, the buckets live in Redis, and the events
are read back from the host's journal, where the role's metadata exporter writes them.

External recipients are in a domain the lab's offline resolver refuses (no traffic leaves
the container); the accepted ones stay deferred and are deleted at the end.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from labenv import require_env
from mailloss import lab_exec

from qnprov_testing.rspamd_ratelimit import lab_variables, render

pytestmark = [pytest.mark.lab, pytest.mark.mailflow]

SMTP_TIMEOUT = 60.0
TEST_AGENCY = "RLTEST"
EXTERNAL_LIMIT = 3
BURST_LIMIT = 2
AGENCY_MESSAGES = 6
# A domain outside the lab (not internal) whose name the lab's resolver refuses.
OUTSIDE = "rl-outside.invalid"
LIVE = "/etc/rspamd/local.d/ratelimit.conf"
EXPECTED_TEXT = (
    f"Tai khoan da gui toi qua {EXTERNAL_LIMIT} nguoi nhan ngoai he thong trong mot gio, vui long thu lai sau "
    f"(Dieu 2) / Account over its limit of {EXTERNAL_LIMIT} external recipients per hour, try again later "
    "(Article 2)")
AGENCY_TEXT = (
    f"Co quan {TEST_AGENCY} da gui qua {AGENCY_MESSAGES} thu trong mot gio, vui long thu lai sau (Dieu 2) / "
    f"Agency {TEST_AGENCY} over its limit of {AGENCY_MESSAGES} messages per hour, try again later (Article 2)")


def _accounts() -> list[dict[str, str]]:
    accounts = json.loads(require_env("QNPROV_TEST_ACCOUNTS"))
    assert len(accounts) >= 3
    return accounts


def _sh(container: str, script: str) -> str:
    return lab_exec(container, "sh", "-c", script)


def _clear_buckets(container: str) -> None:
    # Only rspamd's ratelimit buckets (prefix RL); the password stays inside the host.
    _sh(container, "export REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/redis/redis.conf)\"; "
                   "redis-cli -s /run/redis/redis-server.sock --scan --pattern 'RL*' "
                   "| xargs -r redis-cli -s /run/redis/redis-server.sock del >/dev/null")


def _reload(container: str) -> None:
    _sh(container, "systemctl reload rspamd")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the proxy answers again once the new workers run
        out = _sh(container, "ss -Hltn 'sport = :11332' | wc -l; "
                             "rspamadm control stat >/dev/null 2>&1 && echo up || echo down")
        if out.split()[0] != "0" and out.split()[-1] == "up":
            time.sleep(2)
            return
        time.sleep(1)
    pytest.fail("rspamd did not come back after the reload", pytrace=False)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The first and third lab accounts moved into agency RLTEST with low limits; the
    deployed ratelimit.conf is put back (and the buckets cleared) afterwards."""
    container = require_env("QNPROV_TEST_HOST")
    accounts = _accounts()
    limited, other = accounts[0]["address"].lower(), accounts[1]["address"].lower()
    colleague = accounts[2]["address"].lower()
    variables = lab_variables()
    roster = {a["mail"].lower(): a["agency"] for a in variables["openldap_accounts"]}
    assert other in roster and limited in roster, "the lab accounts are in the roster"
    conf = render("local.d/ratelimit.conf.j2", lab_variables(
        rspamd_ratelimit_user_agency={**roster, limited: TEST_AGENCY, colleague: TEST_AGENCY},
        rspamd_ratelimit_agency_limits={TEST_AGENCY: {
            "user_external_recipients_per_hour": EXTERNAL_LIMIT,
            "burst_external_recipients": BURST_LIMIT,
            "agency_messages_per_hour": AGENCY_MESSAGES,
        }},
    ))
    candidate = tmp_path_factory.mktemp("rl") / "ratelimit.conf"
    candidate.write_text(conf)
    lab_exec(container, "cp", "-p", LIVE, "/root/ratelimit.conf.deployed")
    subprocess.run(["podman", "cp", str(candidate), f"{container}:/root/ratelimit.conf.test"], check=True,
                   timeout=60)
    # The role's validator, as a deploy runs it: the candidate against the whole tree.
    lab_exec(container, "/usr/local/sbin/qnprov-rspamd-configtest", "local.d/ratelimit.conf",
             "/root/ratelimit.conf.test", "-s")
    _sh(container, f"install -o root -g _rspamd -m 0640 /root/ratelimit.conf.test {LIVE}")
    _clear_buckets(container)
    _reload(container)
    try:
        yield {"container": container, "limited": accounts[0], "other": accounts[1], "colleague": accounts[2]}
    finally:
        _sh(container, f"install -o root -g _rspamd -m 0640 /root/ratelimit.conf.deployed {LIVE}; "
                       "rm -f /root/ratelimit.conf.deployed /root/ratelimit.conf.test")
        _clear_buckets(container)
        _reload(container)
        _delete_outside_mail(container)


@pytest.fixture
def fresh_buckets(limited: dict[str, Any]) -> dict[str, Any]:
    """Each test starts with empty buckets: no test depends on another's sends."""
    _clear_buckets(limited["container"])
    return limited


def _delete_outside_mail(container: str) -> None:
    for line in lab_exec(container, "postqueue", "-j").splitlines():
        entry = json.loads(line)
        if all(str(r.get("address", "")).endswith("@" + OUTSIDE) for r in entry.get("recipients", [])):
            lab_exec(container, "postsuper", "-d", str(entry["queue_id"]))


def _endpoint() -> tuple[str, int]:
    host, _, port = json.loads(require_env("QNPROV_TEST_ENDPOINTS"))["submission"].rpartition(":")
    return host, int(port)


SENT: set[str] = set()


def _send(account: dict[str, str], recipients: list[str], message_id: str | None = None) -> tuple[int, str]:
    """(code, text) of the answer to the message's end of data: (250, "") or the refusal."""
    context = ssl.create_default_context(cafile=require_env("QNPROV_TEST_CA"))
    host, port = _endpoint()
    msg = EmailMessage()
    msg["From"] = account["address"]
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = f"qnprov ratelimit test {uuid.uuid4().hex[:8]}"
    msg["Message-ID"] = message_id or f"<rl-{uuid.uuid4().hex}@quangninh.test>"
    SENT.add(msg["Message-ID"].strip("<>"))
    msg.set_content("qnprov outbound-limit test message.\n")
    with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.starttls(context=context)
        smtp.login(account["address"], account["password"])
        try:
            smtp.send_message(msg)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        return 250, ""


def _journal(container: str) -> list[dict[str, Any]]:
    """This test's entries (by Message-ID). Not by --after-cursor: with a match (-t),
    systemd 252's journalctl shows nothing after a cursor whose entry does not match."""
    out = lab_exec(container, "journalctl", "--no-pager", "-o", "json", "--since", "-30min",
                   "-t", "qnprov-ratelimit")
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in entries if json.loads(e["MESSAGE"].split(" ", 1)[1]).get("message_id") in SENT]


@pytest.mark.mail_queued(r"Host or domain name not found|Name service error|try again")
def test_external_limit_refuses_with_451_keeps_internal_mail_and_other_accounts(
        fresh_buckets: dict[str, Any]) -> None:
    container, account, other = fresh_buckets["container"], fresh_buckets["limited"], fresh_buckets["other"]
    outside = [f"rl{n}@{OUTSIDE}" for n in range(EXTERNAL_LIMIT + 1)]

    refused_id = f"<rl-refused-{uuid.uuid4().hex}@quangninh.test>"
    answers = [_send(account, [rcpt], refused_id if n == EXTERNAL_LIMIT else None) for n, rcpt in enumerate(outside)]

    # Up to the limit accepted, the next one refused with rspamd's soft reject.
    assert [code for code, _ in answers[:EXTERNAL_LIMIT]] == [250] * EXTERNAL_LIMIT, answers
    code, text = answers[EXTERNAL_LIMIT]
    assert (code, text) == (451, "4.7.1 " + EXPECTED_TEXT)
    # Still refused on a retry: the bucket does not empty in seconds.
    assert _send(account, [f"retry@{OUTSIDE}"]) == (451, "4.7.1 " + EXPECTED_TEXT)
    # Internal mail of the same account still goes.
    assert _send(account, [other["address"]]) == (250, "")
    # Another account (its own agency, the default limits) is not affected.
    assert _send(other, [f"other@{OUTSIDE}"]) == (250, "")

    time.sleep(2)
    events = _journal(container)
    refusals = [e for e in events if e["MESSAGE"].startswith("QNPROV-RATELIMIT ")]
    bursts = [e for e in events if e["MESSAGE"].startswith("QNPROV-RATE-BURST ")]
    docs = [json.loads(e["MESSAGE"].split(" ", 1)[1]) for e in refusals]
    assert len(docs) == 2, events  # the refused message and its retry
    assert all(d["refused"] for d in docs)
    for doc, entry in zip(docs, refusals, strict=True):
        assert entry["PRIORITY"] == "4"
        assert doc["user"] == account["address"].lower()
        assert doc["agency"] == TEST_AGENCY
        assert doc["limits"] == ["qnprov_user_external"]
        assert doc["action"] == "soft reject"
        assert (doc["recipients"], doc["external_recipients"]) == (1, 1)
    # The burst detector (2 external recipients in 10 minutes) fired from the third
    # external message on, as an alert; never for the other account.
    assert bursts and all(e["PRIORITY"] == "1" for e in bursts), events
    burst_docs = [json.loads(e["MESSAGE"].split(" ", 1)[1]) for e in bursts]
    assert {d["user"] for d in burst_docs} == {account["address"].lower()}
    # The first alert is the third external message, which was accepted: the alert does
    # not refuse by itself.
    assert burst_docs[0]["refused"] is False and burst_docs[0]["action"] != "soft reject", events
    assert all(d["user"] != other["address"].lower() for d in docs + burst_docs)
    assert docs[0]["message_id"] == refused_id.strip("<>")  # rspamd's Message-ID, without <>

    # The audit trail: the qnprov_milter role's import (its timer runs every minute; run
    # now) appends the journal events as clause 2 records, and the chain still verifies.
    lab_exec(container, "systemctl", "start", "qnprov-ratelimit-audit.service")
    records = [json.loads(line) for line in
               _sh(container, "cat /var/log/qnprov/audit/audit-*.jsonl").splitlines() if line.strip()]
    ours = [r for r in records
            if r.get("source") == "rspamd-ratelimit" and r.get("message_id") == refused_id.strip("<>")]
    # The refused message was also part of the burst: one defer record and one alert record.
    assert sorted((r["clause"], r["rule"], r["action"], r["verdict"]) for r in ours) == [
        ("2", "rate-burst", "alert", "defer"), ("2", "rate-user-external", "defer", "defer")], ours
    assert {(r["authenticated_user"], tuple(r["agencies"])) for r in ours} == {
        (account["address"].lower(), (TEST_AGENCY,))}
    verify = lab_exec(container, "/opt/qnprov/venv/bin/python", "-m", "qnprov.policy.milter_cli", "audit",
                      "verify", "/var/log/qnprov/audit")
    assert verify.startswith("ok: "), verify


def test_agency_limit_counts_all_its_accounts_and_spares_other_agencies(fresh_buckets: dict[str, Any]) -> None:
    first, colleague, other = fresh_buckets["limited"], fresh_buckets["colleague"], fresh_buckets["other"]
    half = AGENCY_MESSAGES // 2
    # Internal mail only: the agency's message bucket counts every message of its accounts.
    sent = [_send(first, [other["address"]]) for _ in range(half)]
    sent += [_send(colleague, [other["address"]]) for _ in range(AGENCY_MESSAGES - half)]
    assert sent == [(250, "")] * AGENCY_MESSAGES
    assert _send(colleague, [other["address"]]) == (451, "4.7.1 " + AGENCY_TEXT)
    assert _send(first, [colleague["address"]]) == (451, "4.7.1 " + AGENCY_TEXT)
    # The other agency's account is not affected.
    assert _send(other, [first["address"]]) == (250, "")
    time.sleep(2)
    docs = [json.loads(e["MESSAGE"].split(" ", 1)[1]) for e in _journal(fresh_buckets["container"])
            if e["MESSAGE"].startswith("QNPROV-RATELIMIT ")]
    agency_docs = [d for d in docs if d["limits"] == ["qnprov_agency_messages"]]
    assert [(d["user"], d["agency"]) for d in agency_docs] == [
        (colleague["address"].lower(), TEST_AGENCY), (first["address"].lower(), TEST_AGENCY)]
