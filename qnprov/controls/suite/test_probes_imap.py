"""IMAP probe from outside Dovecot's trusted networks: no plaintext LOGIN."""

from __future__ import annotations

import pytest

from qnprov.controls import probes
from qnprov.controls.target import SERVICES, VerifyTarget

# All network probes and scans share one xdist worker, in file order: probes from one
# address must not overlap (anvil counts them together), and testssl's hundreds of
# connections must come after the probes, not during them.
pytestmark = pytest.mark.xdist_group("network")

UNREACHABLE_TIMEOUT = 5.0


@pytest.mark.control("QN-DOV-02")
def test_plaintext_login_refused_from_outside(target: VerifyTarget, outside_source: str) -> None:
    if "imap" not in target.endpoints:
        # No published plaintext port: then it must really be unreachable from here.
        host = target.endpoint("imaps").host
        try:
            with probes.connect(host, SERVICES["imap"][0], timeout=UNREACHABLE_TIMEOUT):
                reachable = True
        except probes.ProbeError:
            reachable = False
        assert not reachable, f"port 143 on {host} answers but is not declared; probe it as an imap endpoint"
        return
    endpoint = target.endpoint("imap")
    with probes.connect(endpoint.host, endpoint.port) as sock:
        client = probes.ImapClient(sock)
        greeting = client.read_line()
        assert greeting.startswith("* OK"), f"IMAP greeting {greeting!r}"
        untagged, _done = client.command("CAPABILITY")
        capabilities = " ".join(untagged).upper().split()
        assert "LOGINDISABLED" in capabilities, f"plaintext IMAP does not advertise LOGINDISABLED: {capabilities}"
        assert "AUTH=PLAIN" not in capabilities, "plaintext IMAP advertises AUTH=PLAIN"
        _, login = client.command('LOGIN "qnprov-verify-probe" "not-a-password"')
        client.command("LOGOUT")
    assert login.upper().startswith(("NO", "BAD")), f"LOGIN over plaintext answered {login!r}"
    assert "PRIVACYREQUIRED" in login.upper() or "PLAINTEXT" in login.upper(), (
        f"LOGIN refused for another reason ({login!r}); plaintext refusal not proven"
    )
