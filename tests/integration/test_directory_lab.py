"""Provisioning against the lab: the account qnprov creates can log in and receive mail,
and once disabled it can no longer log in and mail to it is refused.

Runs under tests/integration/conftest.py, which brings the lab up (or uses the host in
QNPROV_TEST_HOST) and exports its endpoints and CA. The provisioner connects with
``-i lab``: the lab status file ``$QNPROV_STATE_DIR/lab.json``. Anything missing fails
the test; a lab check that did not run must not look like one that passed.
"""

from __future__ import annotations

import csv
import imaplib
import json
import os
import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnprov import lab
from qnprov.directory import ldapio
from qnprov.directory.cli import accounts_app

pytestmark = pytest.mark.lab
DELIVERY_DEADLINE = 30.0
runner = CliRunner()


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: the lab is not up (run `qnprov lab up`)", pytrace=False)
    return value


def endpoint(name: str) -> tuple[str, int]:
    host, port = json.loads(required_env("QNPROV_TEST_ENDPOINTS"))[name].rsplit(":", 1)
    return host, int(port)


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=required_env("QNPROV_TEST_CA"))
    context.check_hostname = False  # published on 127.0.0.1; the chain is still verified
    return context


def imap_login(address: str, password: str) -> imaplib.IMAP4_SSL:
    host, port = endpoint("imaps")
    client = imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(), timeout=30)
    client.login(address, password)
    return client


def apply(tmp_path: Path, roster: str, *extra: str) -> dict[str, object]:
    (tmp_path / "agencies.csv").write_text("code,name,parent\nQNTEST,Đơn vị kiểm thử của qnprov,\n",
                                           encoding="utf-8")
    (tmp_path / "roster.csv").write_text("employee_id,agency,full_name,title,status\n" + roster, encoding="utf-8")
    # --partial: the lab's own demo accounts are not in this roster and must stay active.
    inventory = str(lab.default_inventory())
    result = runner.invoke(accounts_app, ["apply", "-i", inventory, "--agencies", str(tmp_path / "agencies.csv"),
                                          "--roster", str(tmp_path / "roster.csv"), "--partial", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def change_own_password(address: str, old: str, new: str) -> None:
    """The person's own change (issue 14): a password modify bound as themselves, over the lab's ldaps.

    accounts apply marks every new account pwdReset TRUE, so the mail services refuse it
    until this has happened; slapd then deletes the mark.
    """
    host, port = endpoint("ldap")
    dn = account_dn(address)
    settings = ldapio.LdapSettings(url=f"ldaps://{host}:{port}", base_dn=required_env("QNPROV_TEST_BASE_DN"),
                                   bind_dn=dn, bind_password=old, ca_cert=Path(required_env("QNPROV_TEST_CA")),
                                   tls_server_name=lab.load_lab_config().hosts[0].hostname)
    connection = ldapio.connect(settings)
    try:
        connection.extend.standard.modify_password(dn, old, new)
    finally:
        connection.unbind()


def account_dn(address: str) -> str:
    """The account's DN, from `accounts reset-password --check` (which writes nothing)."""
    result = runner.invoke(accounts_app, ["reset-password", address, "-i", str(lab.default_inventory()),
                                          "--credentials-dir", "/nonexistent-never-written", "--check", "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["dn"])


def send(sender: dict[str, str], recipient: str, subject: str) -> None:
    host, port = endpoint("submission")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender["address"], recipient, subject
    message.set_content("Thư kiểm thử từ qnprov.\n")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        smtp.login(sender["address"], sender["password"])
        smtp.send_message(message)


def wait_for(address: str, password: str, subject: str) -> None:
    deadline = time.monotonic() + DELIVERY_DEADLINE
    while time.monotonic() < deadline:
        client = imap_login(address, password)
        try:
            client.select("INBOX")
            status, data = client.search(None, "SUBJECT", f'"{subject}"')
            if status == "OK" and data[0]:
                return
        finally:
            client.logout()
        time.sleep(1)
    pytest.fail(f"{subject!r} did not reach {address} within {DELIVERY_DEADLINE:.0f}s")


def test_provisioned_account_logs_in_receives_mail_and_is_locked_out_when_disabled(tmp_path: Path) -> None:
    sender = json.loads(required_env("QNPROV_TEST_ACCOUNTS"))[0]
    employee_id = f"T{uuid.uuid4().hex[:10].upper()}"
    person = f"{employee_id},QNTEST,Lê Thị Kiểm Thử,Chuyên viên,\n"

    created = apply(tmp_path, person, "--credentials-dir", str(tmp_path / "creds"))
    assert created["create"] == 1 and created["applied"] is True
    (row,) = list(csv.DictReader((tmp_path / "creds" / "QNTEST.csv").open(encoding="utf-8")))
    address, password = row["address"], row["initial_password"]
    assert row["employee_id"] == employee_id and address.split("@")[0].startswith("thultk")

    # New accounts must change the initial password first (issue 14, test_password_change_lab.py).
    password = f"Kiem-thu-{uuid.uuid4().hex[:12]}"
    change_own_password(address, row["initial_password"], password)
    imap_login(address, password).logout()
    subject = f"qnprov directory {uuid.uuid4().hex}"
    send(sender, address, subject)
    wait_for(address, password, subject)

    # The lab holds a handful of accounts, so one disable is far above the 5% guard.
    disabled = apply(tmp_path, person.replace("Chuyên viên,\n", "Chuyên viên,left\n"), "--allow-mass-change")
    assert disabled["disable"] == 1 and disabled["applied"] is True
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(address, password)
    host, port = endpoint("submission")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        smtp.login(sender["address"], sender["password"])
        smtp.mail(sender["address"])
        code, reply = smtp.rcpt(address)
    assert code == 550, f"RCPT to a disabled account answered {code} {reply!r}"
