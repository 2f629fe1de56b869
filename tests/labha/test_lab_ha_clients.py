"""Real clients reach an account's home store through either host (issue 10: one name for clients).

For each host, an account whose qnMailHost is the *other* host:
* msmtp submits a message through this host (STARTTLS, AUTH, only the lab CA trusted);
* mbsync pulls INBOX through this host's IMAPS, which Dovecot proxies to the home store,
  and the message is there;
* sieve-connect uploads a script through this host's ManageSieve, also proxied; the home
  store's own doveadm lists it, and the home store's log shows the login arriving from
  this host's address.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from qnprov import lab
from qnprov.labclient import Lab
from qnprov_testing import clients

DELIVERY_DEADLINE = 60.0


@pytest.fixture(scope="module")
def ha(lab_ha_up: tuple[lab.LabConfig, dict[str, Any]]) -> Lab:
    return Lab(lab_ha_up[0])


def _away_account(ha: Lab, via: lab.LabHost) -> tuple[str, lab.LabHost]:
    """An account homed on the host that is not ``via``, and that home."""
    home = next(h for h in ha.config.hosts if h.name != via.name)
    homed = ha.homed_on(home)
    assert homed, f"the lab-ha inventory homes no demo account on {home.hostname}"
    return homed[0], home


@pytest.mark.parametrize("via_name", ["ha1", "ha2"])
def test_msmtp_and_mbsync_through_the_other_host_reach_the_home_store(ha: Lab, via_name: str,
                                                                      tmp_path: Path) -> None:
    via = next(h for h in ha.config.hosts if h.name == via_name)
    user, home = _away_account(ha, via)
    token = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, user, f"Thư qua {via.name} {token}"
    msg["Date"], msg["Message-ID"] = format_datetime(datetime.now().astimezone()), make_msgid(domain=ha.config.domain)
    msg.set_content(f"Gửi bằng msmtp qua {via.hostname}, đọc bằng mbsync. {token}\n")
    sent = clients.msmtp_send(tmp_path, msg.as_string(), server=via.hostname, port=via.publish["submission"][0],
                              user=user, password=ha.password(user), ca=ha.config.ca_cert, recipient=user)
    assert sent.returncode == 0, sent.stderr

    began, found = time.monotonic(), False
    while time.monotonic() - began < DELIVERY_DEADLINE and not found:
        pulled, inbox = clients.mbsync_pull_inbox(tmp_path, server=via.hostname, port=via.publish["imaps"][0],
                                                  user=user, password=ha.password(user), ca=ha.config.ca_cert)
        assert pulled.returncode == 0, pulled.stderr
        found = any(token in p.read_text(errors="replace") for d in ("new", "cur") for p in (inbox / d).glob("*"))
        if not found:
            time.sleep(2)
    assert found, f"mbsync through {via.name} never saw the message sent to {user}"
    # the IMAP login was proxied: the home store logged a login for the user from via's address
    log = lab.podman("exec", home.container, "journalctl", "-u", "dovecot", "--since", "-5min", "-o", "cat").stdout
    assert any(f"imap-login: Login: user=<{user}>" in line and f"rip={via.ip}" in line
               for line in log.splitlines()), f"no proxied IMAP login from {via.ip} on {home.name}"


@pytest.mark.parametrize("via_name", ["ha1", "ha2"])
def test_sieve_connect_through_the_other_host_writes_on_the_home_store(ha: Lab, via_name: str,
                                                                        tmp_path: Path) -> None:
    via = next(h for h in ha.config.hosts if h.name == via_name)
    user, home = _away_account(ha, via)
    name = f"qnprov-proxy-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "filter.sieve"
    script.write_text('require ["fileinto"];\nif header :contains "subject" "qnprov-proxy-test" '
                      '{ fileinto "INBOX"; }\n')
    common = {"server": via.hostname, "port": via.publish["sieve"][0], "user": user,
              "password": ha.password(user), "ca": ha.config.ca_cert}
    up = clients.sieve_connect(tmp_path, "--upload", "--localsieve", str(script), "--remotesieve", name, **common)
    assert up.returncode == 0, up.stderr
    try:
        listed = clients.sieve_connect(tmp_path, "--list", **common)
        assert listed.returncode == 0, listed.stderr
        assert name in [word.strip('"') for word in listed.stdout.split()]  # sieve-connect quotes names
        on_home = lab.podman("exec", home.container, "doveadm", "sieve", "list", "-u", user).stdout
        assert name in on_home.split(), f"{name} is not on {home.name}'s store: {on_home!r}"
        log = lab.podman("exec", home.container, "journalctl", "-u", "dovecot", "--since", "-5min",
                         "-o", "cat").stdout
        assert any(f"managesieve-login: Login: user=<{user}>" in line and f"rip={via.ip}" in line
                   for line in log.splitlines()), f"no proxied ManageSieve login from {via.ip} on {home.name}"
    finally:
        gone = clients.sieve_connect(tmp_path, "--delete", "--remotesieve", name, **common)
        assert gone.returncode == 0, gone.stderr
