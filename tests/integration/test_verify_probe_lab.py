"""verify's SMTP probes keep working after a roster import disables the demo accounts (issue 9).

The demo accounts are set to ``qnAccountStatus: disabled`` (what ``accounts apply`` does
to everyone missing from the HR roster), as the qnprov service account; the test then
checks that mail to them is refused, and that verify's probe recipient (the lab target's,
built the way ``qnprov verify`` builds it) is still accepted and that the two probes that
need it, QN-PFX-15 (smuggling) and QN-POL-06 (TỐI MẬT refused), still reach a verdict.
The accounts are re-enabled afterwards, whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labenv import require_env

from qnprov import lab
from qnprov.controls import probes
from qnprov.controls.verify import lab_config_targets

pytestmark = pytest.mark.lab

CA_FILE = "/etc/qnprov/tls/ca.pem"
TLS_ENV = ["--env", f"LDAPTLS_CACERT={CA_FILE}", "--env", "LDAPTLS_REQCERT=demand"]
HELO = "verify-probe.example.net"


def _ldap(container: str, argv: list[str], password: str, ldif: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an LDAP tool in the container, bound with -y from a private temporary file."""
    made = subprocess.run(["podman", "exec", "-i", container, "sh", "-c", "umask 077; f=$(mktemp); cat > $f; echo $f"],
                          input=password, capture_output=True, text=True, timeout=60, check=True)
    secret_file = made.stdout.strip()
    try:
        return subprocess.run(["podman", "exec", "-i", *TLS_ENV, container, *argv, "-y", secret_file],
                              input=ldif, capture_output=True, text=True, timeout=60, check=False)
    finally:
        subprocess.run(["podman", "exec", container, "rm", "-f", secret_file], timeout=60, check=False)


def _status_ldif(dns: list[str], status: str) -> str:
    return "".join(f"dn: {dn}\nchangetype: modify\nreplace: qnAccountStatus\nqnAccountStatus: {status}\n\n"
                   for dn in dns)


def _rcpt(host: str, port: int, recipient: str) -> probes.Reply:
    with probes.smtp_session(host, port) as (client, _):
        client.ehlo(HELO)
        assert client.command("MAIL FROM:<qnprov-verify@example.net>").code == 250
        return client.command(f"RCPT TO:<{recipient}>")


@pytest.fixture
def demo_accounts_disabled() -> Iterator[list[str]]:
    container = require_env("QNPROV_TEST_HOST")
    base_dn = require_env("QNPROV_TEST_BASE_DN")
    secrets = Path(require_env("QNPROV_STATE_DIR")) / "secrets"
    password = (secrets / "ldap_qnprov").read_text(encoding="utf-8").split()[0]
    bind = ["-x", "-H", "ldap://127.0.0.1", "-ZZ", "-D", f"cn=qnprov,ou=services,{base_dn}"]
    addresses = [a["address"] for a in json.loads(require_env("QNPROV_TEST_ACCOUNTS"))]
    assert addresses, "the lab lists no demo account"
    dns = []
    for address in addresses:
        found = _ldap(container, ["ldapsearch", *bind, "-LLL", "-o", "ldif-wrap=no", "-b", base_dn,
                                  f"(&(objectClass=qnMailAccount)(mail={address})(qnAccountStatus=active))", "1.1"],
                      password)
        assert found.returncode == 0, found.stderr
        dn = [line[4:] for line in found.stdout.splitlines() if line.startswith("dn: ")]
        assert len(dn) == 1, f"{address} is not one active account: {found.stdout!r}"
        dns += dn
    disabled = _ldap(container, ["ldapmodify", *bind], password, _status_ldif(dns, "disabled"))
    assert disabled.returncode == 0, disabled.stderr
    try:
        yield addresses
    finally:
        restored = _ldap(container, ["ldapmodify", *bind], password, _status_ldif(dns, "active"))
        assert restored.returncode == 0, restored.stderr


def test_verify_probes_work_with_every_demo_account_disabled(demo_accounts_disabled: list[str]) -> None:
    config = lab.load_lab_config()
    [target] = lab_config_targets(config)
    assert target.probe_recipient == f"qnprov-verify-probe@{os.environ['QNPROV_TEST_DOMAIN']}"
    assert target.probe_recipient not in demo_accounts_disabled
    smtp = target.endpoint("smtp")
    # The roster import's effect is real: mail to a disabled demo account is refused.
    refused = _rcpt(smtp.host, smtp.port, demo_accounts_disabled[0])
    assert refused.code == 550 and "5.1.1" in refused.text, (refused.code, refused.text)
    # verify's own recipient is still accepted...
    accepted = _rcpt(smtp.host, smtp.port, target.probe_recipient)
    assert accepted.code == 250, (accepted.code, accepted.text)
    # ...so QN-PFX-15's smuggling probe reaches its verdict (silence or 5xx; 250 would be smuggled),
    reply = probes.bare_lf_end_of_data(smtp.host, smtp.port, helo=HELO, recipient=target.probe_recipient)
    assert reply is None or reply.code >= 500, f"bare-LF end of data answered {reply}"
    # ...and QN-POL-06's classified document is refused at DATA citing 1.3(1), not at RCPT.
    with probes.smtp_session(smtp.host, smtp.port) as (client, _):
        client.ehlo(HELO)
        assert client.command("MAIL FROM:<qnprov-verify@example.net>").code == 250
        assert client.command(f"RCPT TO:<{target.probe_recipient}>").code == 250
        assert client.command("DATA").code == 354
        client.send(f"From: qnprov-verify@example.net\r\nTo: {target.probe_recipient}\r\n"
                    "Subject: qnprov verify probe\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\nTỐI MẬT\r\nThư thăm dò.\r\n.\r\n".encode())
        answer = client.reply()
    assert answer.code == 550 and "1.3(1)" in answer.text, (answer.code, answer.text)
