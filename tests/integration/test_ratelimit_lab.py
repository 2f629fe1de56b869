"""Outbound abuse limits (issue 13) on the lab: rspamd's ratelimit module and the lab's
Redis, configured by the rspamd role's own templates, exercised through submission.

The test renders local.d/ratelimit.conf from the role's template (qnprov_testing.
rspamd_ratelimit, Ansible's templating) with low limits for a test agency that the first
lab account is moved into, and the role's local.d/qnprov_ratelimit.lua (the buckets' keys
and the per-message recipient limits), validates each with the role's staged configtest,
installs them and reloads rspamd; afterwards it puts the deployed files back. Nothing is mocked: the
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
LIVE_LUA = "/etc/rspamd/local.d/qnprov_ratelimit.lua"
# Recipients of one message for the test agency (external ones stricter), and the
# per-account override of the colleague.
PER_MESSAGE = 4
EXTERNAL_PER_MESSAGE = 2
COLLEAGUE_PER_MESSAGE = 6


def _per_message_text(limit: int) -> str:
    return (f"Thu co qua {limit} nguoi nhan, vui long chia thanh nhieu thu roi gui lai (Dieu 2) / "
            f"Message over the limit of {limit} recipients per message, split it and send again (Article 2)")


EXTERNAL_PER_MESSAGE_TEXT = (
    f"Thu co qua {EXTERNAL_PER_MESSAGE} nguoi nhan ngoai he thong, vui long chia thanh nhieu thu roi gui lai "
    f"(Dieu 2) / Message over the limit of {EXTERNAL_PER_MESSAGE} external recipients per message, split it "
    "and send again (Article 2)")
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
            "user_recipients_per_message": PER_MESSAGE,
            "user_external_recipients_per_message": EXTERNAL_PER_MESSAGE,
        }},
        rspamd_ratelimit_user_limits={colleague: {"user_recipients_per_message": COLLEAGUE_PER_MESSAGE}},
    ))
    lua = render("lua/qnprov_ratelimit.lua", lab_variables())
    work = tmp_path_factory.mktemp("rl")
    (work / "ratelimit.conf").write_text(conf)
    (work / "qnprov_ratelimit.lua").write_text(lua)
    lab_exec(container, "cp", "-p", LIVE, "/root/ratelimit.conf.deployed")
    lab_exec(container, "cp", "-p", LIVE_LUA, "/root/qnprov_ratelimit.lua.deployed")
    for name in ("ratelimit.conf", "qnprov_ratelimit.lua"):
        subprocess.run(["podman", "cp", str(work / name), f"{container}:/root/{name}.test"], check=True, timeout=60)
    # The role's validator, as a deploy runs it: each candidate against the whole tree,
    # the Lua first (the configtest of ratelimit.conf loads it).
    lab_exec(container, "/usr/local/sbin/qnprov-rspamd-configtest", "local.d/qnprov_ratelimit.lua",
             "/root/qnprov_ratelimit.lua.test", "-s")
    _sh(container, f"install -o root -g _rspamd -m 0640 /root/qnprov_ratelimit.lua.test {LIVE_LUA}")
    lab_exec(container, "/usr/local/sbin/qnprov-rspamd-configtest", "local.d/ratelimit.conf",
             "/root/ratelimit.conf.test", "-s")
    _sh(container, f"install -o root -g _rspamd -m 0640 /root/ratelimit.conf.test {LIVE}")
    _clear_buckets(container)
    _reload(container)
    try:
        yield {"container": container, "limited": accounts[0], "other": accounts[1], "colleague": accounts[2]}
    finally:
        _sh(container, f"install -o root -g _rspamd -m 0640 /root/ratelimit.conf.deployed {LIVE}; "
                       f"install -o root -g _rspamd -m 0640 /root/qnprov_ratelimit.lua.deployed {LIVE_LUA}; "
                       "rm -f /root/ratelimit.conf.deployed /root/ratelimit.conf.test "
                       "/root/qnprov_ratelimit.lua.deployed /root/qnprov_ratelimit.lua.test")
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


def _plus(account: dict[str, str], tag: str) -> str:
    """A distinct internal recipient: the account's address with a +extension (Postfix's
    recipient_delimiter), delivered into that account's mailbox."""
    local, _, domain = account["address"].partition("@")
    return f"{local}+{tag}@{domain}"


@pytest.mark.mail_queued(r"Host or domain name not found|Name service error|try again")
def test_recipients_per_message_refuse_the_whole_message_external_ones_sooner(
        fresh_buckets: dict[str, Any]) -> None:
    container = fresh_buckets["container"]
    account, other, colleague = fresh_buckets["limited"], fresh_buckets["other"], fresh_buckets["colleague"]
    internal = [_plus(other, f"rpm{n}") for n in range(COLLEAGUE_PER_MESSAGE + 1)]
    outside = [f"rpm{n}@{OUTSIDE}" for n in range(EXTERNAL_PER_MESSAGE + 1)]
    over_id = f"<rl-rpm-over-{uuid.uuid4().hex}@quangninh.test>"
    external_id = f"<rl-rpm-ext-{uuid.uuid4().hex}@quangninh.test>"
    mixed_id = f"<rl-rpm-mixed-{uuid.uuid4().hex}@quangninh.test>"

    # All recipients: the limit's count passes, one more refuses the whole message with 451.
    assert _send(account, internal[:PER_MESSAGE]) == (250, "")
    assert _send(account, internal[:PER_MESSAGE + 1], over_id) == (451, "4.7.1 " + _per_message_text(PER_MESSAGE))
    # At the external limit the message goes (2 of the hourly external bucket's 3).
    assert _send(account, outside[:EXTERNAL_PER_MESSAGE]) == (250, "")
    # External recipients are limited sooner: 3 recipients are under the total limit of 4,
    # but 3 external ones are over the external limit of 2; so is 1 internal + 3 external.
    # The per-message text, not the hourly bucket's: the per-message check comes first.
    assert _send(account, outside, external_id) == (451, "4.7.1 " + EXTERNAL_PER_MESSAGE_TEXT)
    assert _send(account, [internal[0], *outside], mixed_id) == (451, "4.7.1 " + EXTERNAL_PER_MESSAGE_TEXT)
    # A per-account override wins over the agency's limit (6 for the colleague, same agency);
    # the other agency's account has the inventory's limits.
    assert _send(colleague, internal[:COLLEAGUE_PER_MESSAGE]) == (250, "")
    assert _send(colleague, internal[:COLLEAGUE_PER_MESSAGE + 1]) == (
        451, "4.7.1 " + _per_message_text(COLLEAGUE_PER_MESSAGE))
    assert _send(other, [_plus(account, f"rpm{n}") for n in range(COLLEAGUE_PER_MESSAGE + 1)]) == (250, "")

    # The journal: one warning per refused message, naming the per-message limit.
    time.sleep(2)
    refusals = {json.loads(e["MESSAGE"].split(" ", 1)[1])["message_id"]: e for e in _journal(container)
                if e["MESSAGE"].startswith("QNPROV-RATELIMIT ")}
    expected = {
        over_id: (["qnprov_user_recipients_per_message"], PER_MESSAGE + 1, 0),
        external_id: (["qnprov_user_external_recipients_per_message"], EXTERNAL_PER_MESSAGE + 1,
                      EXTERNAL_PER_MESSAGE + 1),
        mixed_id: (["qnprov_user_external_recipients_per_message"], EXTERNAL_PER_MESSAGE + 2,
                   EXTERNAL_PER_MESSAGE + 1),
    }
    for message_id, (limits, recipients, external) in expected.items():
        entry = refusals.get(message_id.strip("<>"))
        assert entry is not None, (message_id, sorted(refusals))
        doc = json.loads(entry["MESSAGE"].split(" ", 1)[1])
        assert entry["PRIORITY"] == "4"
        assert (doc["user"], doc["agency"], doc["refused"], doc["action"]) == (
            account["address"].lower(), TEST_AGENCY, True, "soft reject")
        assert (doc["limits"], doc["recipients"], doc["external_recipients"]) == (limits, recipients, external)

    # The audit trail: the import turns them into clause 2 defer records, the chain verifies.
    lab_exec(container, "systemctl", "start", "qnprov-ratelimit-audit.service")
    records = [json.loads(line) for line in
               _sh(container, "cat /var/log/qnprov/audit/audit-*.jsonl").splitlines() if line.strip()]
    ours = {r["message_id"]: (r["clause"], r["rule"], r["action"], r["verdict"]) for r in records
            if r.get("source") == "rspamd-ratelimit" and r.get("rule") != "rate-burst"
            and r.get("message_id") in {m.strip("<>") for m in expected}}
    assert ours == {
        over_id.strip("<>"): ("2", "rate-user-recipients-per-message", "defer", "defer"),
        external_id.strip("<>"): ("2", "rate-user-external-recipients-per-message", "defer", "defer"),
        mixed_id.strip("<>"): ("2", "rate-user-external-recipients-per-message", "defer", "defer"),
    }
    verify = lab_exec(container, "/opt/qnprov/venv/bin/python", "-m", "qnprov.policy.milter_cli", "audit",
                      "verify", "/var/log/qnprov/audit")
    assert verify.startswith("ok: "), verify
