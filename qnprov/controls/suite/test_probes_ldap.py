"""LDAP probe from outside the host: an anonymous bind is refused."""

from __future__ import annotations

import ssl

import pytest
from ldap3 import Connection, Server, Tls

from qnprov.controls import probes
from qnprov.controls.target import VerifyTarget

# All network probes and scans share one xdist worker, in file order: probes from one
# address must not overlap (anvil counts them together), and testssl's hundreds of
# connections must come after the probes, not during them.
pytestmark = pytest.mark.xdist_group("network")

UNREACHABLE_TIMEOUT = 5.0


@pytest.mark.control("QN-LDAP-02")
def test_anonymous_bind_refused_from_outside(target: VerifyTarget, outside_source: str) -> None:
    if "ldaps" not in target.endpoints:
        host = target.endpoint("smtp").host
        for port in (389, 636):
            try:
                with probes.connect(host, port, timeout=UNREACHABLE_TIMEOUT):
                    reachable = True
            except probes.ProbeError:
                reachable = False
            assert not reachable, f"LDAP port {port} on {host} answers from outside but is not declared"
        return
    endpoint = target.endpoint("ldaps")
    # Chain validation is QN-TLS-04's job; here only the bind verdict matters.
    tls = Tls(validate=ssl.CERT_NONE, version=ssl.PROTOCOL_TLS_CLIENT)
    server = Server(endpoint.host, port=endpoint.port, use_ssl=True, tls=tls, connect_timeout=10)
    connection = Connection(server, receive_timeout=10, raise_exceptions=False)
    try:
        if not connection.open() and connection.closed:
            raise probes.ProbeError(f"cannot open ldaps://{endpoint.address}: {connection.result}")
        bound = connection.bind()
        bind_result = dict(connection.result or {})
        # The root DSE may stay public (clients discover StartTLS there); the data may not.
        base = target.ldap_base_dn or ",".join(f"dc={part}" for part in target.domain.split("."))
        connection.search(base, "(objectClass=*)", search_scope="SUBTREE", attributes=["*"], size_limit=5)
        leaked = [entry.entry_dn for entry in connection.entries]
    finally:
        connection.unbind()
    assert not bound, f"anonymous bind accepted from {outside_source}: {bind_result}"
    assert bind_result.get("description") in ("inappropriateAuthentication", "unwillingToPerform"), (
        f"anonymous bind refused with an unexpected result {bind_result}"
    )
    assert not leaked, f"an unauthenticated search of {base} returned entries: {leaked}"
