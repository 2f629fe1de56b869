"""The README's `swaks --tls` example works on a machine set up by scripts/bootstrap.sh.

swaks only *recommends* its TLS module (Net::SSLeay) and bootstrap installs with
--no-install-recommends, so bootstrap must name the modules itself. Checked two ways:
bootstrap's package list, and a real `swaks --tls --tls-verify` run against a throwaway
STARTTLS listener on loopback whose own side records the negotiated TLS session.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qnprov import paths

TLS_MODULES = ("libnet-ssleay-perl", "libio-socket-ssl-perl")


def _bootstrap_packages() -> list[str]:
    text = (paths.PROJECT_ROOT / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
    block = re.search(r"SYSTEM_PACKAGES=\((.*?)\n\)", text, re.S)
    assert block, "no SYSTEM_PACKAGES array in bootstrap.sh"
    return [word for line in block[1].splitlines() for word in line.split("#", 1)[0].split()]


def test_bootstrap_installs_swaks_with_its_tls_modules():
    packages = _bootstrap_packages()
    assert "swaks" in packages
    for module in TLS_MODULES:
        assert module in packages, f"bootstrap installs swaks without {module}"


def _ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qnprov swaks test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


class StartTLSListener:
    """One SMTP session on 127.0.0.1 that offers STARTTLS and records what happened."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.tls_version: str | None = None
        self.commands_in_tls: list[str] = []
        self.data = b""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(30)
            stream: socket.socket | ssl.SSLSocket = conn
            reader = stream.makefile("rb")

            def send(line: str) -> None:
                stream.sendall(line.encode() + b"\r\n")

            send("220 localhost ESMTP qnprov test listener")
            while True:
                line = reader.readline()
                if not line:
                    return
                verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                if self.tls_version:
                    self.commands_in_tls.append(verb)
                if verb in ("EHLO", "HELO"):
                    send("250-localhost" if not self.tls_version else "250 localhost")
                    if not self.tls_version:
                        send("250 STARTTLS")
                elif verb == "STARTTLS" and not self.tls_version:
                    send("220 2.0.0 Ready to start TLS")
                    stream = self.context.wrap_socket(conn, server_side=True)
                    self.tls_version = stream.version()
                    reader = stream.makefile("rb")
                elif verb in ("MAIL", "RCPT"):
                    send("250 2.1.0 Ok")
                elif verb == "DATA":
                    send("354 End data with <CR><LF>.<CR><LF>")
                    while (chunk := reader.readline()) not in (b".\r\n", b""):
                        self.data += chunk
                    send("250 2.0.0 Ok: queued")
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.sock.close()


def test_swaks_tls_negotiates_with_a_verified_certificate(tmp_path: Path):
    swaks = shutil.which("swaks")
    assert swaks, "swaks is not installed: run scripts/bootstrap.sh"
    ca_file, cert_file, key_file = _ca_and_server_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = StartTLSListener(context)
    proc = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{listener.port}", "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
         "--helo", "client.quangninh.test", "--from", "annv@quangninh.test", "--to", "binhtt@quangninh.test",
         "--header", "Subject: swaks tls check", "--body", "qua TLS"],
        capture_output=True, text=True, timeout=60)
    listener.thread.join(timeout=30)
    assert listener.error is None, listener.error
    assert "TLS not available" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # swaks' own account of the session, and the listener's.
    assert re.search(r"^=== TLS started with cipher \S+", proc.stdout, re.M), proc.stdout
    assert listener.tls_version in ("TLSv1.2", "TLSv1.3"), listener.tls_version
    assert listener.commands_in_tls[:4] == ["EHLO", "MAIL", "RCPT", "DATA"], listener.commands_in_tls
    assert b"Subject: swaks tls check" in listener.data
