"""SMTP probes from outside mynetworks to the host's published ports.

Each test opens at most a handful of connections (the concurrency test: the
configured limit + 1, capped at 51), every read is bounded by probes.REPLY_TIMEOUT,
and no probe completes a message: nothing is delivered.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
from typing import Any

import pytest

from qnprov.controls import probes
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import effective
from qnprov.controls.target import VerifyTarget

# All network probes and scans share one xdist worker, in file order: probes from one
# address must not overlap (anvil counts them together), and testssl's hundreds of
# connections must come after the probes, not during them.
pytestmark = pytest.mark.xdist_group("network")

PROBE_HELO = "qnprov-verify.example.net"
#: A credential that can never be valid; it is refused before it is even checked.
BOGUS_AUTH = base64.b64encode(b"\0qnprov-verify-probe\0not-a-password").decode()
SOFTWARE_NAMES = re.compile(r"postfix|debian|ubuntu|sendmail|exim", re.IGNORECASE)
MAX_CONNECTION_PROBES = 51


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _recipient(target: VerifyTarget) -> str:
    return target.probe_recipient or f"postmaster@{target.domain}"


@pytest.mark.control("QN-PFX-01")
def test_port25_offers_starttls(target: VerifyTarget, outside_source: str) -> None:
    endpoint = target.endpoint("smtp")
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, greeting):
        assert greeting.code == 220, f"greeting {greeting.text!r}"
        assert "STARTTLS" in probes.extensions(client.ehlo(PROBE_HELO)), "port 25 does not offer STARTTLS"
        reply = client.command("STARTTLS")
        assert reply.code == 220, f"STARTTLS answered {reply.text!r}"
        client.starttls(_unverified(), None)
        assert client.ehlo(PROBE_HELO).code == 250, "EHLO after STARTTLS failed"


@pytest.mark.control("QN-PFX-07")
def test_port25_does_not_offer_auth(target: VerifyTarget, outside_source: str) -> None:
    endpoint = target.endpoint("smtp")
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        assert "AUTH" not in probes.extensions(client.ehlo(PROBE_HELO)), "port 25 offers AUTH in clear text"
        assert client.command("STARTTLS").code == 220, "STARTTLS refused"
        client.starttls(_unverified(), None)
        offered = probes.extensions(client.ehlo(PROBE_HELO))
        assert "AUTH" not in offered, f"port 25 offers AUTH after STARTTLS: {sorted(offered)}"


@pytest.mark.control("QN-PFX-06")
def test_submission_refuses_auth_before_starttls(target: VerifyTarget, outside_source: str) -> None:
    endpoint = target.endpoint("submission")
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        offered = probes.extensions(client.ehlo(PROBE_HELO))
        assert "AUTH" not in offered, f"587 advertises AUTH before STARTTLS: {sorted(offered)}"
        reply = client.command(f"AUTH PLAIN {BOGUS_AUTH}")
        assert reply.code >= 500, f"AUTH before STARTTLS answered {reply.text!r}; expected a 5xx refusal"


@pytest.mark.control("QN-PFX-09")
def test_open_relay_refused_from_outside(target: VerifyTarget, outside_source: str) -> None:
    endpoint = target.endpoint("smtp")
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        client.ehlo(PROBE_HELO)
        mail = client.command("MAIL FROM:<>")
        if mail.code != 250:
            raise ProbeError(f"MAIL FROM:<> refused ({mail.text!r}); relay probe inconclusive")
        rcpt = client.command("RCPT TO:<qnprov-relay-probe@example.net>")
        client.command("RSET")
    assert rcpt.code >= 400, f"relay to example.net accepted from {outside_source}: {rcpt.text!r}"
    if "relay access denied" not in rcpt.text.lower():
        raise ProbeError(f"RCPT refused for another reason ({rcpt.text!r}); relay not proven closed")


@pytest.mark.control("QN-PFX-12")
def test_vrfy_refused(target: VerifyTarget, outside_source: str) -> None:
    endpoint = target.endpoint("smtp")
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        client.ehlo(PROBE_HELO)
        reply = client.command(f"VRFY {_recipient(target)}")
    assert reply.code == 502, f"VRFY answered {reply.text!r}; expected 502 (disabled)"


@pytest.mark.control("QN-PFX-13")
def test_non_fqdn_helo_rejected(target: VerifyTarget, outside_source: str) -> None:
    endpoint = target.endpoint("smtp")
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        client.ehlo("qnprov-verify")
        client.command("MAIL FROM:<>")
        rcpt = client.command(f"RCPT TO:<{_recipient(target)}>")
        client.command("RSET")
    assert rcpt.code >= 500 and "helo" in rcpt.text.lower(), (
        f"non-FQDN HELO from {outside_source} not rejected: RCPT answered {rcpt.text!r}"
    )


@pytest.mark.control("QN-PFX-14")
def test_banner_hides_software_on_the_wire(target: VerifyTarget, outside_source: str) -> None:
    seen = {}
    for service in ("smtp", "submission"):
        endpoint = target.endpoint(service)
        with probes.smtp_session(endpoint.host, endpoint.port) as (client, greeting):
            seen[service] = greeting.text + "\n" + client.ehlo(PROBE_HELO).text
    leaks = {service: text for service, text in seen.items() if SOFTWARE_NAMES.search(text)}
    assert not leaks, f"greeting or EHLO names the software: {leaks}"


@pytest.mark.control("QN-PFX-15")
def test_bare_lf_end_of_data_not_honoured(target: VerifyTarget, outside_source: str) -> None:
    """Send ``<LF>.<LF>`` inside DATA: a vulnerable server ends the message there."""
    endpoint = target.endpoint("smtp")
    reply = probes.bare_lf_end_of_data(endpoint.host, endpoint.port, helo=PROBE_HELO, recipient=_recipient(target))
    assert reply is None or reply.code >= 500, (
        f"server ended DATA at a bare <LF>.<LF> (answered {reply.text!r}): SMTP smuggling possible"
    )


@pytest.mark.control("QN-PFX-17")
def test_connection_count_limit_enforced(target: VerifyTarget, outside_source: str, postconf: dict[str, str],
                                         service_params: Any) -> None:
    limit_text = effective(postconf, service_params, "submission/inet", "smtpd_client_connection_count_limit")
    if not limit_text.isdigit() or not 0 < int(limit_text) < MAX_CONNECTION_PROBES:
        raise ProbeError(
            f"connection count limit {limit_text!r} is not probeable (want 1..{MAX_CONNECTION_PROBES - 1})"
        )
    limit = int(limit_text)
    endpoint = target.endpoint("submission")
    sockets: list[socket.socket] = []
    replies: list[int] = []
    try:
        for _ in range(limit + 1):
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=probes.REPLY_TIMEOUT)
            sockets.append(sock)
            replies.append(probes.SmtpClient(sock).reply().code)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
    assert replies[-1] == 421, (
        f"connection {limit + 1} of {limit} allowed was answered {replies[-1]}, not 421 (anvil limit not enforced)"
    )


@pytest.mark.control("QN-PFX-24")
def test_role_addresses_accepted_for_every_hosted_domain(target: VerifyTarget, outside_source: str) -> None:
    """postmaster@ (RFC 5321 §4.5.1; also the DMARC and TLS-RPT report address) and abuse@ (RFC 2142)."""
    endpoint = target.endpoint("smtp")
    refused = []
    with probes.smtp_session(endpoint.host, endpoint.port) as (client, _):
        client.ehlo(PROBE_HELO)
        if client.command("MAIL FROM:<qnprov-verify@example.net>").code != 250:
            raise ProbeError("probe sender refused")
        for domain in target.hosted_domains or [target.domain]:
            for name in ("postmaster", "abuse"):
                reply = client.command(f"RCPT TO:<{name}@{domain}>")
                if reply.code != 250:
                    refused.append(f"{name}@{domain}: {reply.text}")
        client.command("RSET")
    assert not refused, f"role addresses refused: {refused}"
