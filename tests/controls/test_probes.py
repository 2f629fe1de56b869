"""The legacy-TLS probe against real openssl s_server instances on loopback.

A probe that can never see a legacy handshake would pass every host; this proves it
sees one when a server accepts TLS 1.1, and sees a refusal when it does not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from qnprov.controls import probes


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe.quangninh.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def s_server(cert_files: tuple[Path, Path], *protocol: str) -> Iterator[int]:
    port = _free_port()
    cert, key = cert_files
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
         "-cipher", "ALL:@SECLEVEL=0", "-quiet", "-naccept", "4", *protocol],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _handshake(port: int, version: ssl.TLSVersion) -> str | None:
    with probes.connect("127.0.0.1", port, timeout=5) as raw:
        try:
            with probes.legacy_only_context(version).wrap_socket(raw) as tls:
                return tls.version()
        except ssl.SSLError as exc:
            assert exc.reason != "NO_PROTOCOLS_AVAILABLE", "this client cannot offer the legacy protocol"
            return None


def test_legacy_probe_sees_a_server_that_accepts_tls11(cert_files: tuple[Path, Path]) -> None:
    with s_server(cert_files, "-tls1_1") as port:
        assert _handshake(port, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"


def test_legacy_probe_is_refused_by_a_tls12_only_server(cert_files: tuple[Path, Path]) -> None:
    with s_server(cert_files, "-tls1_2") as port:
        assert _handshake(port, ssl.TLSVersion.TLSv1_1) is None
        assert _handshake(port, ssl.TLSVersion.TLSv1) is None


def test_smuggling_probe_runs_the_dialogue_and_sees_a_protected_server() -> None:
    """Postfix 3.7.11's smtp-sink only ends DATA at ``<CR><LF>.<CR><LF>``: the probe must get
    through EHLO/MAIL/RCPT/DATA and then report silence (not smuggled), without queuing mail."""
    port = _free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{port}", "5"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        reply = probes.bare_lf_end_of_data("127.0.0.1", port, helo="qnprov-verify.example.net",
                                           recipient="postmaster@quangninh.test")
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    assert reply is None, f"a protected server was reported as answering the bare-LF dot: {reply}"
