"""The decision's rules in force on the host: the policy milter, its bundle, the forwarding
controls of clause 1.3(2), the header checks and the audit trail; and one probe from
outside that a classified document is refused at SMTP time.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any

import pytest

from qnprov.controls import hoststate, probes
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import effective, file_facts, run
from qnprov.controls.target import VerifyTarget

MILTER_UNIT = "qnprov-milter"
#: The decision's Article 3: in force 10 days after signing, replacing this decision.
SUPERSEDED = "1372/2008/QĐ-UBND"
EFFECTIVE_AFTER_DAYS = 10
#: Rules whose clause forbids something: a site may tune them, never make them harmless.
BLOCKING_ACTIONS = ("reject", "quarantine")
PROBE_HELO = "qnprov-verify.example.net"
FREEMAIL_PROBE = "qnprov-verify-probe@gmail.com"


def _milter_socket(postconf: dict[str, str]) -> str:
    for item in hoststate.split_list(postconf.get("smtpd_milters", "")):
        if item.startswith("unix:") and "qnprov" in item:
            return item.removeprefix("unix:")
    raise AssertionError(f"smtpd_milters names no qnprov milter socket: {postconf.get('smtpd_milters')!r}")


def _unit_command(host: Any, prop: str) -> tuple[str, list[str] | None]:
    """``systemctl show -p ExecStart/ExecStartPre`` of the milter unit: the raw text and its argv, if any."""
    text = run(host, f"systemctl show -p {prop} --value {MILTER_UNIT}")
    found = re.search(r"argv\[\]=(?P<argv>[^;]+?) ;", text)
    return text, shlex.split(found["argv"]) if found else None


@pytest.fixture(scope="module")
def policy_in_force(session_host: Any) -> dict[str, Any]:
    """The policy the running milter loaded: its own pre-start check, asked for JSON.

    The unit's ExecStartPre is the exact check (bundle, overrides, agency map) the
    milter's start and every reload pass through, so its arguments name the live files.
    """
    pre, argv = _unit_command(session_host, "ExecStartPre")
    if argv is None:
        raise ProbeError(f"{MILTER_UNIT} has no pre-start policy check: {pre.strip()[:300]}")
    if "--check-config" not in argv:
        raise ProbeError(f"{MILTER_UNIT}'s pre-start command is not the policy check: {argv}")
    output = run(session_host, " ".join(shlex.quote(a) for a in [*argv, "--json"]))
    try:
        doc: dict[str, Any] = json.loads(output)
    except json.JSONDecodeError as exc:
        raise ProbeError(f"the policy check printed no JSON: {output[:300]}") from exc
    return doc


@pytest.mark.control("QN-POL-01")
def test_policy_milter_runs_and_postfix_uses_it(session_host: Any, postconf: dict[str, str]) -> None:
    state = session_host.run(f"systemctl is-active {MILTER_UNIT}").stdout.strip()
    assert state == "active", f"{MILTER_UNIT} is {state or 'missing'}"
    user = run(session_host, f"systemctl show -p User --value {MILTER_UNIT}").strip()
    assert user and user != "root", f"{MILTER_UNIT} runs as {user or 'root'}; it parses hostile mail"
    socket = _milter_socket(postconf)
    facts = file_facts(session_host, socket)
    assert facts["type"] == "socket", f"{socket} is a {facts['type']}, not the milter's socket"
    assert facts["mode"] & 0o007 == 0, f"{socket} is open to every local user (mode {facts['mode']:o})"
    assert f"unix:{socket}" in postconf.get("non_smtpd_milters", ""), "locally submitted mail skips the milter"
    # A dead milter must defer mail (the sender retries), never let it through unchecked.
    assert postconf.get("milter_default_action") == "tempfail", (
        f"milter_default_action={postconf.get('milter_default_action')!r}, expected tempfail")


@pytest.mark.control("QN-POL-02")
def test_rule_bundle_in_force_is_the_decision(policy_in_force: dict[str, Any]) -> None:
    decision = policy_in_force["decision"]
    assert decision["supersedes"]["number"] == SUPERSEDED, f"bundle supersedes {decision['supersedes']}"
    assert decision["effective_after_days"] == EFFECTIVE_AFTER_DAYS, (
        f"bundle says in force {decision['effective_after_days']} days after signing; Article 3 says 10")
    if decision["signing_date"]:
        assert decision["effective_date"] == policy_in_force["computed_effective_date"], decision
    rules = policy_in_force["rules"]
    clauses = {rule["clause"] for rule in rules}
    missing = {"1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)"} - clauses
    assert not missing, f"no enabled rule carries clause(s) {sorted(missing)}"
    for clause in ("1.3(1)",):
        actions = {rule["action"] for rule in rules if rule["clause"] == clause}
        assert actions & set(BLOCKING_ACTIONS), f"clause {clause} is forbidden, but its rules only {sorted(actions)}"


@pytest.mark.control("QN-POL-03")
def test_forwarding_to_free_mail_is_blocked_on_every_path(session_host: Any, postconf: dict[str, str],
                                                          service_params: Any, master_services: Any,
                                                          doveconf: Any) -> None:
    # Sieve redirects (and users' auto-forward rules, which are Sieve) go to this listener.
    listen = doveconf("submission_host")
    services = {f"{s.name}/{s.kind}": s for s in master_services}
    service = f"{listen}/inet"
    assert service in services, f"Dovecot re-injects through {listen!r}, which is no Postfix listener"
    assert listen.startswith(("127.", "[::1]")), f"re-injection listener {listen} is not loopback-only"
    restrictions = effective(postconf, service_params, service, "smtpd_recipient_restrictions")
    tables = re.findall(r"check_recipient_access\s+regexp:(\S+?),?(?:\s|$)", restrictions + " ")
    assert tables, f"{service} has no free-mail recipient check: {restrictions!r}"
    table = hoststate.expand_parameters(tables[0], postconf)
    answer = run(session_host, f"postmap -q {shlex.quote(FREEMAIL_PROBE)} regexp:{shlex.quote(table)}")
    assert answer.startswith("550 5.7.1") and "1.3(2)" in answer, f"{table} answers {answer.strip()!r} for Gmail"
    # LDAP forwards: the forwards map never expands an entry with a free-mail forward.
    maps = hoststate.split_list(postconf.get("virtual_alias_maps", ""))
    forwards = [m for m in maps if m.endswith("virtual_forwards.cf")]
    assert forwards, f"virtual_alias_maps has no forwards map: {maps}"
    path = hoststate.expand_parameters(forwards[0].split(":")[-1], postconf)
    query = run(session_host, f"grep '^query_filter' {shlex.quote(path)}")
    assert "(!(|" in query and "(qnMailForward=*@gmail.com)" in query, (
        f"{path} expands free-mail forwards: {query.strip()[:200]}")


@pytest.mark.control("QN-POL-04")
def test_forged_verdict_headers_are_dropped(session_host: Any, postconf: dict[str, str]) -> None:
    checks = postconf.get("header_checks", "")
    assert checks.startswith("regexp:"), f"header_checks={checks!r}; X-QN-* from outside would reach mailboxes"
    table = hoststate.expand_parameters(checks, postconf)
    for header in ("X-QN-Signature: valid", "X-QN-Policy: accept"):
        answer = run(session_host, f"postmap -q {shlex.quote(header)} {shlex.quote(table)}").strip()
        assert answer == "IGNORE", f"{header!r} from outside is kept (header_checks answers {answer!r})"


@pytest.mark.control("QN-POL-05")
def test_audit_trail_is_private_chained_and_kept(session_host: Any) -> None:
    start, argv = _unit_command(session_host, "ExecStart")
    found = re.search(r"--audit-log\s+(\S+)", start)
    assert found, f"{MILTER_UNIT} writes no audit trail: {start.strip()[:300]}"
    directory = found[1]
    facts = file_facts(session_host, directory)
    assert facts["type"] == "directory", f"audit path {directory} is a {facts['type']}"
    assert facts["mode"] & 0o007 == 0, f"{directory} is readable by every local user (mode {facts['mode']:o})"
    assert argv, f"cannot read {MILTER_UNIT}'s command: {start.strip()[:300]}"
    python = argv[0]
    verified = session_host.run(f"{shlex.quote(python)} -m qnprov.policy.milter_cli audit verify "
                                f"{shlex.quote(directory)}")
    assert verified.rc == 0, f"audit chain check failed: {(verified.stdout + verified.stderr).strip()[-400:]}"
    timer = session_host.run("systemctl is-enabled qnprov-audit-prune.timer").stdout.strip()
    assert timer == "enabled", f"the audit retention timer is {timer or 'missing'}"


@pytest.mark.control("QN-POL-06")
def test_classified_document_refused_at_smtp_time(target: VerifyTarget, outside_source: str) -> None:
    """A message stamped TỐI MẬT, sent to the MX from outside, is refused at DATA citing 1.3(1)."""
    endpoint = target.endpoint("smtp")
    recipient = target.probe_recipient or f"postmaster@{target.domain}"
    token = uuid.uuid4().hex
    message = (
        f"From: qnprov-verify@example.net\r\nTo: {recipient}\r\nSubject: qnprov verify probe {token[:8]}\r\n"
        f"Message-ID: <{token}@{PROBE_HELO}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"TỐI MẬT\r\nThư thăm dò của qnprov verify (mã {token}); máy chủ phải từ chối thư này.\r\n.\r\n"
    ).encode()
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        client.ehlo(PROBE_HELO)
        mail = client.command("MAIL FROM:<qnprov-verify@example.net>")
        if mail.code != 250:
            raise ProbeError(f"probe sender refused: {mail.text!r}")
        rcpt = client.command(f"RCPT TO:<{recipient}>")
        if rcpt.code != 250:
            raise ProbeError(f"probe recipient refused ({rcpt.text!r})")
        if client.command("DATA").code != 354:
            raise ProbeError("DATA refused before the content was sent")
        client.send(message)
        reply = client.reply()
    assert reply.code == 550 and "5.7.1" in reply.text and "1.3(1)" in reply.text, (
        f"a TỐI MẬT message from outside was answered {reply.code} {reply.text!r}; expected 550 5.7.1 citing 1.3(1)")
