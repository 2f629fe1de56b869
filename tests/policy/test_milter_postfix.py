"""The milter behind a real Postfix (host binaries, private instance on loopback) and a real smtp-sink.

Needs root and the postfix package; nothing here is simulated: Postfix talks the
milter protocol to ``qnprov milter`` running as its own process tree.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import milter_corpus as corpus
import pytest
import signing_fixtures
from typer.testing import CliRunner

from qnprov.policy.audit import iter_audit_records, verify_audit_log
from qnprov.policy.forwarding import (
    REINJECT_DAEMON_NAME,
    freemail_domains,
    reinject_main_params,
    reinject_master_entry,
    render_freemail_recipient_regexp,
)
from qnprov.policy.milter_cli import quarantine_app
from qnprov_testing.postfix import (
    MilterProcess,
    PostfixInstance,
    SinkMessage,
    SmtpSink,
    free_port,
    make_workdir,
    parse_sink_dump,
    wait_for_port,
)

QUEUE_ID_IN_RECEIVED = re.compile(rb"\(Postfix\) with ESMTP id ([0-9A-Za-z]+)")


class Stack:
    def __init__(self, workdir: Path, max_body: int = 2_000_000) -> None:
        self.workdir = workdir
        # A test CA stands in for the Government Cipher Committee's root (clause 1.2).
        self.ca = signing_fixtures.make_ca()
        self.signer = signing_fixtures.make_signer(self.ca)
        anchors = workdir / "anchors"
        anchors.mkdir()
        signing_fixtures.write_anchor(self.ca, anchors)
        self.overrides = corpus.write_overrides(workdir / "policy", extra=f"trust_anchors_dir: {anchors}\n")
        self.agency_map = workdir / "policy" / "agencies.yml"
        self.agency_map.write_text(f"'@{corpus.DOMAIN}': STTTT\n", encoding="utf-8")
        self.audit_dir = workdir / "audit"
        self.audit_dir.mkdir()
        self.sink = SmtpSink(workdir).start()
        self.milter = MilterProcess(workdir, args=[
            "--workers", "2", "--overrides", str(self.overrides), "--audit-log", str(self.audit_dir),
            "--audit-fsync", "never", "--agency-map", str(self.agency_map), "--max-body", str(max_body),
            "--timeout", "20",
        ]).start()
        regexp = workdir / "etc-maps" / "freemail_recipient.regexp"
        regexp.parent.mkdir()
        regexp.write_text(render_freemail_recipient_regexp(freemail_domains()), encoding="utf-8")
        self.reinject_port = free_port()
        self.reinject_nomap_port = free_port()
        self.postfix = PostfixInstance(
            workdir, relay_port=self.sink.port, milter_socket=self.milter.socket_path,
            extra_main=reinject_main_params(str(regexp)),
            extra_master=[
                reinject_master_entry(f"127.0.0.1:{self.reinject_port}"),
                # The same listener without the Postfix map: only the milter's guard stands.
                f"127.0.0.1:{self.reinject_nomap_port} inet n - n - - smtpd\n"
                f"  -o syslog_name=postfix/reinject-nomap -o milter_macro_daemon_name={REINJECT_DAEMON_NAME}",
            ],
        ).start()
        wait_for_port(self.reinject_port)

    def audit(self) -> list[dict]:
        return list(iter_audit_records(self.audit_dir))

    def send(self, message: bytes, sender: str, rcpts: list[str], port: int | None = None) -> None:
        with smtplib.SMTP("127.0.0.1", port or self.postfix.smtp_port, timeout=60) as client:
            client.sendmail(sender, rcpts, message)

    def delivered(self, message_id: str, timeout: float = 30) -> SinkMessage:
        """The sink's copy of the message, once it is complete.

        smtp-sink writes its dump file while the DATA transaction runs, so the file holds
        the Message-ID long before the body ends. A copy counts once Postfix has logged
        ``status=sent`` for that message (the sink answered 250 to the final dot) and the
        file has stopped growing."""
        deadline = time.monotonic() + timeout
        sent = re.compile(r"\b([0-9A-Za-z]+): message-id=" + re.escape(message_id))
        while time.monotonic() < deadline:
            log = self.postfix.log_text()
            queue_ids = set(sent.findall(log))
            if any(re.search(rf"\b{qid}: to=<.*status=sent", log) for qid in queue_ids):
                found = [m for m in self.sink.messages() if message_id.encode() in m.content]
                if found:
                    time.sleep(0.3)
                    again = parse_sink_dump(found[0].path)
                    if again.content == found[0].content:
                        return again
            time.sleep(0.1)
        raise AssertionError(f"{message_id} not delivered; log:\n{self.postfix.log_text()[-3000:]}")

    def close(self) -> None:
        self.postfix.stop()
        self.milter.stop()
        self.sink.stop()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    workdir = make_workdir()
    built = Stack(workdir)
    yield built
    built.close()
    shutil.rmtree(workdir, ignore_errors=True)


def _message_id(message: bytes) -> str:
    match = re.search(rb"^Message-ID: (<[^>]+>)", message, re.MULTILINE | re.IGNORECASE)
    assert match
    return match.group(1).decode()


def _strip_added(delivered: bytes) -> tuple[bytes, list[bytes]]:
    """Remove the Received headers the relays prepended and the X-QN-* headers the milter appended."""
    head, _, body = delivered.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    while fields and fields[0].lower().startswith(b"received:"):
        fields.pop(0)
    added = [f for f in fields if f.lower().startswith(b"x-qn-")]
    kept = [f for f in fields if not f.lower().startswith(b"x-qn-")]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body, added


def _queue_id(message: SinkMessage) -> str:
    match = QUEUE_ID_IN_RECEIVED.search(message.content)
    assert match
    return match.group(1).decode()


def test_clean_inbound_message_delivered_byte_identical(stack: Stack) -> None:
    original = corpus.clean_internal().replace(f"From: {corpus.OFFICIAL}".encode(), b"From: dan@example.org")
    stack.send(original, "dan@example.org", [corpus.OFFICIAL])
    delivered = stack.delivered(_message_id(original))
    content, added = _strip_added(delivered.content)
    assert content == original
    assert added == []
    record = next(r for r in stack.audit() if r["queue_id"] == _queue_id(delivered))
    assert record["verdict"] == "accept" and record["direction"] == "inbound" and record["agency"] == "STTTT"


def test_marked_docx_refused_at_data_with_5_7_1_citing_clause(stack: Stack) -> None:
    message = corpus.marked_docx()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        stack.send(message, corpus.OFFICIAL, [corpus.COLLEAGUE])
    assert refused.value.smtp_code == 550
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1") and "1.3(1)" in text and "Rejected" in text
    record = next(r for r in reversed(stack.audit()) if r["rule"] == "classified-marking")
    marking = next(f for f in record["findings"] if f["rule"] == "classified-marking")
    assert record["action"] == "reject" and "baocao.docx" in marking["location"]
    assert f"{record['queue_id']}: milter-reject: END-OF-MESSAGE" in stack.postfix.log_text()
    assert _message_id(message).encode() not in b"".join(m.content for m in stack.sink.messages())


def test_registration_mail_tagged_and_audited(stack: Stack) -> None:
    message = corpus.registration()
    stack.send(message, "security@facebookmail.com", [corpus.OFFICIAL])
    delivered = stack.delivered(_message_id(message))
    content, added = _strip_added(delivered.content)
    assert content == message  # only headers were added
    assert any(h.startswith(b"X-QN-Policy: tag") and b"1.3(3)" in h for h in added)
    record = next(r for r in stack.audit() if r["queue_id"] == _queue_id(delivered))
    assert (record["verdict"], record["clause"], record["recipients"], record["agency"]) == (
        "tag", "1.3(3)", [corpus.OFFICIAL], "STTTT")


def test_oversize_message_held_then_released_and_deleted(stack: Stack) -> None:
    runner = CliRunner()
    config = ["--config-dir", str(stack.postfix.config_dir)]
    big = [corpus.with_docx(["Báo cáo"] * 2, subject=f"Tệp lớn {n}").replace(
        b"\r\n\r\n", b"\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2500, 1) for n in range(2)]
    for message in big:
        stack.send(message, corpus.OFFICIAL, [corpus.COLLEAGUE])
    listed = runner.invoke(quarantine_app, ["list", "--json", *config, "--audit-log", str(stack.audit_dir)])
    assert listed.exit_code == 0, listed.output
    held = json.loads(listed.output)
    assert len(held) == 2
    assert all("cannot-inspect-size" in (m["reason"] or "") for m in held)
    first, second = (m["queue_id"] for m in held)
    released = runner.invoke(quarantine_app, ["release", first, *config, "--audit-log", str(stack.audit_dir)])
    assert released.exit_code == 0, released.output
    stack.postfix.flush()
    delivered_ids = {_queue_id(m) for m in stack.sink.wait_messages(1) if True}
    deadline = time.monotonic() + 30
    while first not in delivered_ids and time.monotonic() < deadline:
        time.sleep(0.2)
        delivered_ids = {_queue_id(m) for m in stack.sink.messages()}
    assert first in delivered_ids
    deleted = runner.invoke(quarantine_app, ["delete", second, *config])
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(runner.invoke(quarantine_app, ["list", "--json", *config]).output) == []
    again = runner.invoke(quarantine_app, ["delete", second, *config])
    assert again.exit_code == 1 and "not held" in again.output
    bad = runner.invoke(quarantine_app, ["delete", "ALL", *config])
    assert bad.exit_code == 2 and "not a Postfix queue id" in bad.output
    events = [r for r in stack.audit() if r.get("source") == "quarantine-cli"]
    assert [(e["action"], e["queue_id"]) for e in events] == [("release", first)]


def test_sieve_redirect_to_gmail_refused_on_reinjection_listener(stack: Stack) -> None:
    message = corpus.clean_internal()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        stack.send(message, corpus.OFFICIAL, ["canbo.rieng@Gmail.com."], port=stack.reinject_port)
    code, text = refused.value.recipients["canbo.rieng@Gmail.com."]
    assert code == 550 and b"5.7.1" in text and b"1.3(2)" in text, (code, text)
    # postlogd writes the log asynchronously: wait (bounded) for the reject line.
    reject = re.compile(r"postfix/reinject/smtpd\[\d+\]: NOQUEUE: reject: RCPT .*canbo\.rieng@Gmail\.com.*1\.3\(2\)")
    deadline = time.monotonic() + 30
    while not reject.search(log := stack.postfix.log_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reject.search(log), log[-2000:]
    # A vacation auto-reply (null sender) to a citizen is not a forward and goes out.
    reply = message.replace(b"Message-ID: <", b"Auto-Submitted: auto-replied (vacation)\r\nMessage-ID: <vacation.", 1)
    reply = re.sub(rb"(?m)^To: .*$", b"To: nguoidan@gmail.com", reply, count=1)
    stack.send(reply, "", ["nguoidan@gmail.com"], port=stack.reinject_port)
    assert stack.delivered(_message_id(reply)).rcpts == ["nguoidan@gmail.com"]
    # A Sieve redirect of a null-sender message keeps the null sender (RFC 5228 4.2): refused at DATA.
    redirected = b"X-Sieve-Redirected-From: " + corpus.OFFICIAL.encode() + b"\r\n" + reply.replace(
        b"Message-ID: <vacation.", b"Message-ID: <redirect.", 1)
    with pytest.raises(smtplib.SMTPDataError) as data_refused:
        stack.send(redirected, "", ["nguoidan@gmail.com"], port=stack.reinject_port)
    assert data_refused.value.smtp_code == 550 and b"1.3(2)" in data_refused.value.smtp_error


def test_milter_guard_refuses_and_audits_when_postfix_map_is_absent(stack: Stack) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        stack.send(corpus.clean_internal(), corpus.OFFICIAL, ["x@yahoo.com.vn"], port=stack.reinject_nomap_port)
    code, text = refused.value.recipients["x@yahoo.com.vn"]
    assert code == 550 and b"1.3(2)" in text
    record = next(r for r in reversed(stack.audit()) if r["rule"] == "freemail-forward")
    assert record["recipients"] == ["x@yahoo.com.vn"] and record["clause"] == "1.3(2)"
    assert record["agency"] == "STTTT"


@pytest.mark.parametrize("kind", ["signed-pdf", "smime"])
def test_signed_mail_byte_identical_with_signature_header(stack: Stack, kind: str) -> None:
    if kind == "signed-pdf":
        from email.message import EmailMessage
        from email.policy import SMTP

        built = EmailMessage()
        built["From"], built["To"], built["Subject"] = corpus.OFFICIAL, corpus.COLLEAGUE, "Quyết định ký số"
        built["Message-ID"] = "<signed-pdf@test.qnprov>"
        built["Date"] = corpus.date_header()
        built.set_content("Gửi quyết định đã ký số.\n")
        built.add_attachment(signing_fixtures.signed_pdf(stack.signer), maintype="application", subtype="pdf",
                             filename="quyetdinh.pdf")
        message = built.as_bytes(policy=SMTP)
    else:
        # With a Date header, so Postfix's cleanup has no missing header to add.
        message = signing_fixtures.smime_signed(stack.signer).replace(
            b"Message-ID: <signed@quangninh.gov.vn>",
            f"Message-ID: <signed-smime@test.qnprov>\r\nDate: {corpus.date_header()}".encode())
    stack.send(message, corpus.OFFICIAL, [corpus.COLLEAGUE])
    delivered = stack.delivered(_message_id(message))
    content, added = _strip_added(delivered.content)
    assert content == message
    signature = [h for h in added if h.lower().startswith(b"x-qn-signature:")]
    assert signature, added
    # The exact verdict: "valid" (intact, chains to the stack's trust anchor). A substring test
    # would also pass on "invalid" or "untrusted".
    assert len(signature) == 1, signature
    value = b" ".join(signature[0].split(b":", 1)[1].split())
    params = [p.strip() for p in value.split(b";")]
    assert params[0] == b"valid", signature
    assert any(p.startswith(b"signer") for p in params[1:]), signature


def test_sighup_reloads_bundle_without_dropping_the_connection(stack: Stack) -> None:
    original = stack.overrides.read_text(encoding="utf-8")
    try:
        with smtplib.SMTP("127.0.0.1", stack.postfix.smtp_port, timeout=60) as client:
            with pytest.raises(smtplib.SMTPDataError):
                client.sendmail(corpus.OFFICIAL, [corpus.COLLEAGUE], corpus.marked_subject())
            stack.overrides.write_text(
                corpus.overrides_yaml(extra="rules:\n  classified-marking:\n    action: tag\n"), encoding="utf-8")
            stack.milter.signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while "policy bundle reloaded" not in stack.milter.log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "policy bundle reloaded" in stack.milter.log.read_text()
            message = corpus.marked_subject().replace(b"Message-ID: <", b"Message-ID: <after-hup.", 1)
            client.sendmail(corpus.OFFICIAL, [corpus.COLLEAGUE], message)  # same SMTP session
            assert client.noop()[0] == 250
        delivered = stack.delivered(_message_id(message))
        assert b"X-QN-Policy: tag" in delivered.content
        # A broken bundle on SIGHUP is refused; the running one stays.
        stack.overrides.write_text("rules: [broken\n", encoding="utf-8")
        stack.milter.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "new bundle rejected" not in stack.milter.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "new bundle rejected" in stack.milter.log.read_text()
        stack.send(corpus.clean_internal().replace(b"Message-ID: <", b"Message-ID: <alive.", 1),
                   corpus.OFFICIAL, [corpus.COLLEAGUE])
    finally:
        stack.overrides.write_text(original, encoding="utf-8")
        stack.milter.signal(signal.SIGHUP)
        time.sleep(1)


def test_audit_chain_of_the_whole_run_verifies(stack: Stack) -> None:
    result = verify_audit_log(stack.audit_dir)
    assert result.ok, result
    assert result.records >= 5


def test_milter_killed_tempfails_and_retry_delivers() -> None:
    """A sending MTA (second Postfix) keeps the mail on 4xx and retries once the milter is back."""
    workdir = make_workdir()
    sink = SmtpSink(workdir).start()
    overrides = corpus.write_overrides(workdir / "policy")
    milter = MilterProcess(workdir, args=["--workers", "1", "--overrides", str(overrides)]).start()
    receiver = PostfixInstance(workdir / "receiver", relay_port=sink.port, milter_socket=milter.socket_path)
    sender = PostfixInstance(workdir / "sender", relay_port=receiver.smtp_port)
    (workdir / "receiver").mkdir()
    (workdir / "sender").mkdir()
    try:
        receiver.start()
        sender.start()
        milter.kill_group()
        message = corpus.clean_internal().replace(b"Message-ID: <", b"Message-ID: <retry.", 1)
        with smtplib.SMTP("127.0.0.1", sender.smtp_port, timeout=30) as client:
            client.sendmail(corpus.OFFICIAL, [corpus.COLLEAGUE], message)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "4.7.1" not in sender.log_text():
            time.sleep(0.2)
        assert re.search(r"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 4\d\d 4\.7\.\d", sender.log_text())
        assert sink.messages() == []
        milter.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sink.messages():
            sender.flush()
            time.sleep(1)
        [delivered] = sink.messages()
        assert _message_id(message).encode() in delivered.content
    finally:
        sender.stop()
        receiver.stop()
        milter.stop()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
