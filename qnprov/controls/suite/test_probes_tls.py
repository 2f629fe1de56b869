"""TLS handshakes from outside against every TLS endpoint the host publishes."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest

from qnprov.controls import probes
from qnprov.controls.probes import ProbeError
from qnprov.controls.target import SERVICES, VerifyTarget

# All network probes and scans share one xdist worker, in file order: probes from one
# address must not overlap (anvil counts them together), and testssl's hundreds of
# connections must come after the probes, not during them.
pytestmark = pytest.mark.xdist_group("network")

REQUIRED_TLS_SERVICES = ("smtp", "submission", "submissions", "imaps")


def tls_services(target: VerifyTarget) -> list[str]:
    missing = [s for s in REQUIRED_TLS_SERVICES if s not in target.endpoints]
    if missing:
        raise ProbeError(f"host {target.name} declares no endpoint for {missing}")
    return [service for service in SERVICES if service in target.endpoints]


def _starttls(sock: socket.socket, protocol: str) -> None:
    """Run the plaintext part of a STARTTLS exchange on a raw socket."""
    if protocol == "smtp":
        client = probes.SmtpClient(sock)
        client.reply()
        client.ehlo("qnprov-verify.example.net")
        if client.command("STARTTLS").code != 220:
            raise ProbeError("STARTTLS refused")
    elif protocol == "imap":
        imap = probes.ImapClient(sock)
        imap.read_line()
        _, done = imap.command("STARTTLS")
        if not done.upper().startswith("OK"):
            raise ProbeError(f"IMAP STARTTLS refused: {done!r}")
    elif protocol == "sieve":
        sieve = probes.LineChannel(sock)
        for _ in range(50):
            if sieve.read_line().upper().startswith("OK"):
                break
        sieve.send(b"STARTTLS\r\n")
        if not sieve.read_line().upper().startswith("OK"):
            raise ProbeError("ManageSieve STARTTLS refused")


@contextlib.contextmanager
def tls_connection(target: VerifyTarget, service: str, context: ssl.SSLContext,
                   server_hostname: str | None) -> Iterator[ssl.SSLSocket]:
    endpoint = target.endpoint(service)
    starttls = SERVICES[service][1]
    with probes.connect(endpoint.host, endpoint.port) as raw:
        if starttls:
            _starttls(raw, starttls)
        wrapped = context.wrap_socket(raw, server_hostname=server_hostname)
        try:
            yield wrapped
        finally:
            with contextlib.suppress(OSError):
                wrapped.close()


@pytest.mark.control("QN-TLS-04")
def test_chain_validates(target: VerifyTarget, outside_source: str) -> None:
    context = probes.verifying_context(target.ca_file)
    failures = {}
    for service in tls_services(target):
        try:
            with tls_connection(target, service, context, target.mail_hostname):
                pass
        except ssl.SSLCertVerificationError as exc:
            failures[service] = exc.verify_message or str(exc)
        except (ssl.SSLError, ConnectionError) as exc:
            failures[service] = f"handshake failed: {exc}"
    assert not failures, f"certificate chain or name does not validate for {target.mail_hostname}: {failures}"


@pytest.mark.control("QN-TLS-05")
def test_legacy_tls_refused(target: VerifyTarget, outside_source: str) -> None:
    if not (ssl.HAS_TLSv1 and ssl.HAS_TLSv1_1):
        raise ProbeError("this Python/OpenSSL cannot offer TLS 1.0/1.1; the probe would prove nothing")
    accepted = []
    for service in tls_services(target):
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            try:
                with tls_connection(target, service, probes.legacy_only_context(version), None) as tls:
                    accepted.append(f"{service}: {tls.version()}")
            except ssl.SSLError as exc:
                if exc.reason == "NO_PROTOCOLS_AVAILABLE":
                    raise ProbeError(f"client could not offer {version.name}: {exc}") from exc
            except ConnectionError:
                pass  # the server hung up on the old hello: refused
    assert not accepted, f"legacy TLS handshakes completed: {accepted}"


def _fetch_mta_sts(target: VerifyTarget, domain: str) -> tuple[str, dict[str, str], str]:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt on the host's HTTPS endpoint, chain verified."""
    name = f"mta-sts.{domain}"
    request = (f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {name}\r\nUser-Agent: qnprov-verify\r\n"
               "Connection: close\r\n\r\n").encode()
    response = bytearray()
    with tls_connection(target, "https", probes.verifying_context(target.ca_file), name) as tls:
        tls.sendall(request)
        while len(response) < 65536:
            chunk = tls.recv(4096)
            if not chunk:
                break
            response += chunk
    head, _, body = bytes(response).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body.decode("utf-8", errors="replace")


@pytest.mark.control("QN-TLS-09")
def test_mta_sts_policy_served_for_every_hosted_domain(target: VerifyTarget, outside_source: str) -> None:
    """RFC 8461 §3.3: HTTPS with a valid certificate for mta-sts.<domain>, 200, text/plain, this MX listed."""
    if "https" not in target.endpoints:
        raise ProbeError(f"host {target.name} declares no HTTPS endpoint for the MTA-STS policy")
    problems = []
    for domain in target.hosted_domains or [target.domain]:
        try:
            status, headers, body = _fetch_mta_sts(target, domain)
        except ssl.SSLCertVerificationError as exc:
            problems.append(f"{domain}: certificate for mta-sts.{domain} does not validate: {exc.verify_message}")
            continue
        except (ssl.SSLError, OSError) as exc:
            problems.append(f"{domain}: {exc}")
            continue
        fields: dict[str, list[str]] = {}
        for line in body.replace("\r\n", "\n").split("\n"):
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), []).append(value.strip())
        if " 200 " not in f"{status} ":
            problems.append(f"{domain}: {status}")
        elif not headers.get("content-type", "").startswith("text/plain"):
            problems.append(f"{domain}: Content-Type {headers.get('content-type')!r}, RFC 8461 wants text/plain")
        elif fields.get("version") != ["STSv1"] or fields.get("mode") != ["enforce"]:
            problems.append(f"{domain}: version {fields.get('version')} mode {fields.get('mode')}, "
                            "expected STSv1 enforce")
        elif target.mail_hostname not in fields.get("mx", []):
            problems.append(f"{domain}: policy lists mx {fields.get('mx')}, not this host {target.mail_hostname}")
        elif not fields.get("max_age") or int(fields["max_age"][0]) < 86400:
            problems.append(f"{domain}: max_age {fields.get('max_age')} is under a day")
    assert not problems, f"MTA-STS policy not published as RFC 8461 requires: {problems}"
