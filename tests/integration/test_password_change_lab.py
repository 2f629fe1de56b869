"""Forced change of the initial password on the lab (issue 14): the mail services refuse an
account whose entry carries pwdReset TRUE, saying where to change the password, and accept
it once the person has changed the password themselves; an admin reset marks it again.

Measured against the lab's real Dovecot (IMAP, ManageSieve) and Postfix submission (SASL
through Dovecot), with the account created by ``qnprov accounts apply -i lab``. The
account is disabled again at the end, whatever happened (the lab's own demo accounts are
never touched: ``--partial``).
"""

from __future__ import annotations

import base64
import csv
import imaplib
import json
import smtplib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_directory_lab import (
    account_dn,
    apply,
    change_own_password,
    endpoint,
    imap_login,
    required_env,
    runner,
    tls_context,
)

from qnprov import lab
from qnprov.directory.cli import accounts_app

pytestmark = pytest.mark.lab
CHANGE_URL_PART = "Your initial password must be changed before you can use mail. Change it at https://"


def _imap_refusal(address: str, password: str) -> str:
    with pytest.raises(imaplib.IMAP4.error) as refused:
        imap_login(address, password).logout()
    return str(refused.value)


def _smtp_auth(address: str, password: str) -> tuple[int, str]:
    host, port = endpoint("submission")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        try:
            code, reply = smtp.login(address, password)
        except smtplib.SMTPAuthenticationError as error:
            return error.smtp_code, error.smtp_error.decode()
        return code, reply.decode()


def _sieve_auth(address: str, password: str) -> str:
    """AUTHENTICATE PLAIN on ManageSieve (RFC 5804) after STARTTLS; returns the server's final line."""
    host, port = endpoint("sieve")

    def read_until_status(stream) -> str:  # type: ignore[no-untyped-def]
        while True:
            line = stream.readline().decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                raise AssertionError("ManageSieve closed the connection")
            if line.split(" ", 1)[0] in ("OK", "NO", "BYE"):
                return line

    with socket.create_connection((host, port), timeout=30) as raw:
        plain = raw.makefile("rwb")
        assert read_until_status(plain).startswith("OK")
        plain.write(b"STARTTLS\r\n")
        plain.flush()
        assert read_until_status(plain).startswith("OK")
        with tls_context().wrap_socket(raw, server_hostname=None) as secure:
            stream = secure.makefile("rwb")
            assert read_until_status(stream).startswith("OK")  # capabilities again after TLS
            token = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
            stream.write(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
            stream.flush()
            return read_until_status(stream)


@pytest.fixture
def new_account(tmp_path: Path) -> Iterator[dict[str, str]]:
    employee_id = f"P{uuid.uuid4().hex[:10].upper()}"
    person = f"{employee_id},QNTEST,Trần Văn Đổi Mật Khẩu,Chuyên viên,\n"
    created = apply(tmp_path, person, "--credentials-dir", str(tmp_path / "creds"))
    assert created["create"] == 1 and created["applied"] is True
    (row,) = list(csv.DictReader((tmp_path / "creds" / "QNTEST.csv").open(encoding="utf-8")))
    try:
        yield row
    finally:  # the lab as it was: the account disabled (the project's own way), demo accounts untouched
        disabled = apply(tmp_path, person.replace("Chuyên viên,\n", "Chuyên viên,left\n"), "--allow-mass-change")
        assert disabled["disable"] == 1


def test_services_refuse_an_initial_password_until_the_person_changes_it(new_account: dict[str, str],
                                                                        tmp_path: Path) -> None:
    address, initial = new_account["address"], new_account["initial_password"]
    hostname = lab.load_lab_config().hosts[0].hostname

    # Before the change: the right password is refused with where to change it ...
    imap_text = _imap_refusal(address, initial)
    assert CHANGE_URL_PART in imap_text and f"https://{hostname}/" in imap_text, imap_text
    code, smtp_text = _smtp_auth(address, initial)
    assert code == 535 and CHANGE_URL_PART in smtp_text and hostname in smtp_text, (code, smtp_text)
    sieve_text = _sieve_auth(address, initial)
    assert sieve_text.startswith("NO") and CHANGE_URL_PART in sieve_text, sieve_text
    # ... and a wrong one gets the generic failure, with no hint about the account.
    wrong_imap = _imap_refusal(address, initial + "x")
    assert "AUTHENTICATIONFAILED" in wrong_imap and "password must be changed" not in wrong_imap, wrong_imap
    wrong_code, wrong_smtp = _smtp_auth(address, initial + "x")
    assert wrong_code == 535 and "password must be changed" not in wrong_smtp, wrong_smtp

    # The person's own change (LDAP password modify with the old password) lifts it everywhere.
    chosen = f"Doi-mat-khau-{uuid.uuid4().hex[:12]}"
    change_own_password(address, initial, chosen)
    imap_login(address, chosen).logout()
    assert _smtp_auth(address, chosen)[0] == 235
    assert _sieve_auth(address, chosen).startswith("OK")
    assert "password must be changed" not in _imap_refusal(address, initial)  # the old one is just wrong now

    # An admin reset marks the account again, with a new initial password in the hand-over file.
    creds = tmp_path / "reset"
    result = runner.invoke(accounts_app, ["reset-password", address, "-i", str(lab.default_inventory()),
                                          "--credentials-dir", str(creds), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["must_change"], doc["applied"], doc["dn"]) == (True, True, account_dn(address))
    (row,) = list(csv.DictReader((creds / "QNTEST.csv").open(encoding="utf-8")))
    assert CHANGE_URL_PART in _imap_refusal(address, row["initial_password"])
    assert _smtp_auth(address, row["initial_password"])[0] == 535
    assert "password must be changed" not in _imap_refusal(address, chosen)  # the chosen one is gone
    assert required_env("QNPROV_TEST_BASE_DN") in doc["dn"]
