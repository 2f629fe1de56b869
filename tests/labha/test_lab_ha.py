"""The multi-host lab, for real: `qnprov lab up -i lab-ha` and each host's own endpoints.

One `lab up -i lab-ha` per session (it converges both hosts, seeds the demo agency and
smoke-tests through both MTAs, or re-converges a lab that is already up). Then each host
must answer SMTP and IMAP on its own published loopback ports with a certificate for
its own hostname, signed by the lab CA, and the hosts must reach each other by name on
the lab network. The lab stays up for the next run, as the single lab does; `qnprov lab
down -i lab-ha --purge` removes it.
"""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import ssl
import subprocess
import sys
from typing import Any

import pytest

from qnprov import lab, labcheck, paths

LAB_HA = paths.INVENTORIES_DIR / "lab-ha"
#: Run inside a lab container: the first line of the SMTP greeting of the host named in argv[1].
SMTP_GREETING = """
import socket, sys
with socket.create_connection((sys.argv[1], 25), timeout=30) as conn:
    data = b""
    while b"\\r\\n" not in data:
        chunk = conn.recv(512)
        if not chunk:
            break
        data += chunk
print(data.split(b"\\r\\n")[0].decode())
"""


@pytest.fixture(scope="module")
def lab_ha(lab_ha_up: tuple[lab.LabConfig, dict[str, Any]]) -> tuple[lab.LabConfig, dict[str, Any]]:
    return lab_ha_up


def _context(config: lab.LabConfig) -> ssl.SSLContext:
    """Only the lab CA is trusted, and the name checked is the host's own hostname."""
    return labcheck.tls_context(config.ca_cert)


def test_lab_up_converged_both_hosts_and_smoked_through_both_mtas(lab_ha):
    config, doc = lab_ha
    assert doc["running"] is True
    assert [(h["name"], h["container"]) for h in doc["hosts"]] == [(h.name, h.container) for h in config.hosts]
    assert [h["name"] for h in doc["hosts"]] == ["ha1", "ha2"]
    for host in doc["hosts"]:
        assert host["state"] == "running"
        assert {svc: state for svc, state in host["services"].items() if state != "active"} == {}, host["name"]
    assert [s["host"] for s in doc["smoke"]["hosts"]] == ["ha1", "ha2"]
    assert all(0 <= s["delivery_seconds"] < 60 for s in doc["smoke"]["hosts"])
    assert doc["timings"]["converge"] > 0


@pytest.mark.parametrize("name", ["ha1", "ha2"])
def test_each_host_answers_smtp_on_its_own_port_with_its_own_certificate(lab_ha, name: str):
    config, _ = lab_ha
    host = next(h for h in config.hosts if h.name == name)
    port = host.publish["smtp"][0]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.example.org", timeout=60) as smtp:
        code, reply = smtp.ehlo()
        assert code == 250 and reply.decode().splitlines()[0] == host.hostname
        assert smtp.has_extn("starttls")
        # smtplib checks the certificate against the name it connected to (127.0.0.1):
        # make that the host's own name, with only the lab CA trusted.
        smtp._host = host.hostname
        code, _ = smtp.starttls(context=_context(config))
        assert code == 220
        cert = smtp.sock.getpeercert()
        assert ("DNS", host.hostname) in cert["subjectAltName"]
        code, _ = smtp.ehlo("mx.example.org")
        assert code == 250 and not smtp.has_extn("starttls")


@pytest.mark.parametrize("name", ["ha1", "ha2"])
def test_each_host_answers_imap_on_its_own_port_with_its_own_certificate(lab_ha, name: str):
    config, _ = lab_ha
    host = next(h for h in config.hosts if h.name == name)
    account = config.accounts[1]

    class Imap(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):  # the host's own name, not 127.0.0.1
            sock = imaplib.IMAP4._create_socket(self, timeout)
            return self.ssl_context.wrap_socket(sock, server_hostname=host.hostname)

    with Imap("127.0.0.1", host.publish["imaps"][0], ssl_context=_context(config), timeout=60) as imap:
        cert = imap.sock.getpeercert()
        assert ("DNS", host.hostname) in cert["subjectAltName"]
        typ, _ = imap.login(account.address, config.secret(f"account_{account.employee_id}"))
        assert typ == "OK"
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) >= 1, "the smoke test delivered at least one message here"


def test_the_hosts_reach_each_other_by_name_on_the_lab_network(lab_ha):
    config, _ = lab_ha
    for host in config.hosts:
        assert lab.container_address(host) == host.ip
        for peer, address in host.peers:
            resolved = lab.podman("exec", host.container, "getent", "hosts", peer).stdout.split()
            assert resolved[:2] == [address, peer]
            # SMTP between the containers, over the lab network (not the published ports).
            banner = lab.podman("exec", host.container, "python3", "-c", SMTP_GREETING, peer, timeout=60).stdout
            assert re.match(rf"^220[ -]{re.escape(peer)} ", banner), banner


def test_push_policy_reaches_both_mtas_at_the_same_time(lab_ha):
    """`qnprov push policy` over the two-host lab's own SSH: both MTAs answer, in overlapping transactions.

    The lab was just converged by Ansible, so the push finds nothing to change on either host
    (the two engines agree). Each host's transaction starts before the other one ends: the
    hosts are pushed to at once, not one after another.
    """
    proc = subprocess.run([sys.executable, "-m", "qnprov", "push", "policy", "-i", str(LAB_HA), "--json"],
                          capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["summary"] == {"changed": [], "unchanged": ["ha1", "ha2"], "failed": []}, doc
    spans = {host: (r["began_after_seconds"], r["began_after_seconds"] + r["seconds"])
             for host, r in doc["hosts"].items()}
    (start1, end1), (start2, end2) = spans["ha1"], spans["ha2"]
    assert end1 > 0 and end2 > 0, spans
    assert start1 < end2 and start2 < end1, f"the hosts' transactions did not overlap: {spans}"
