"""qnprov push tls on the lab (issue 12): a new certificate from the lab CA, served by every service.

The test issues a fresh certificate for mail1 from the lab's own CA (the key is made here,
P-256 as roles/common makes it; subject and extensions as the role's request, so the role's
signing step keeps it), pushes it with ``qnprov push tls --json``, and then reads the served
certificate itself on every published TLS endpoint (SMTP STARTTLS on 25 and 587, 465, 993,
ldaps 636, https 443): each must serve the new certificate's sha256. ``qnprov deploy
--check --tags common,openldap`` (the roles that write TLS files) must then find nothing
to change (the two engines agree), and a refused
certificate must leave every TLS file on the host as it was (sha256 on the host).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from labenv import require_env as _env

from qnprov import inventory, lab
from qnprov.push import tls
from qnprov_testing.certs import role_like_server_certificate
from qnprov_testing.cli import qnprov_json

pytestmark = [pytest.mark.lab]

DEPLOY_TIMEOUT = 1800
TLS_FILES = ["/etc/qnprov/tls/fullchain.pem", "/etc/qnprov/tls/privkey.pem", "/etc/qnprov/tls/cert.pem",
             "/etc/qnprov/tls/host.csr", "/etc/qnprov/tls/ca.pem", "/etc/ldap/tls/privkey.pem",
             "/etc/ldap/tls/cert.sha1"]


def _qnprov(*argv: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], dict]:
    return qnprov_json(*argv, timeout=timeout)


def _host_sha(container: str) -> dict[str, str]:
    done = subprocess.run(["podman", "exec", container, "sha256sum", *TLS_FILES], capture_output=True, text=True,
                          check=True, timeout=60)
    return {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}


def _issue(config: lab.LabConfig, host: tls.HostTls, tmp_path: Path, *, valid_days: int = 90,
           names: tuple[str, ...] | None = None) -> tuple[Path, Path, str]:
    """A certificate from the lab CA as roles/common's ownca step issues one; (cert, key, sha256)."""
    ca_cert = x509.load_pem_x509_certificate(config.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key((config.state / "ca" / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for entry in names or host.sans:
        kind, _, value = entry.partition(":")
        if kind == "IP":
            import ipaddress

            sans.append(x509.IPAddress(ipaddress.ip_address(value)))
        else:
            sans.append(x509.DNSName(value))
    now = dt.datetime.now(dt.UTC)
    cert = role_like_server_certificate(host.fqdn, sans, key, ca_cert, ca_key, not_before=now - dt.timedelta(minutes=5),
                                        not_after=now + dt.timedelta(days=valid_days))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex()


def _served(port: int, kind: str, server_name: str) -> str:
    """The served certificate's sha256, read here with the standard library (not with qnprov's probe)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if kind == "starttls":
        with smtplib.SMTP("127.0.0.1", port, local_hostname="push-tls.test", timeout=20) as smtp:
            smtp.starttls(context=context)
            der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    else:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as conn:
            der = conn.getpeercert(binary_form=True)
    assert der
    return hashlib.sha256(der).hexdigest()


def test_push_tls_serves_the_new_certificate_everywhere_and_deploy_agrees(tmp_path: Path) -> None:
    container = _env("QNPROV_TEST_HOST")
    config = lab.load_lab_config()
    inv = inventory.load(config.inventory)
    host = tls.host_tls(inv, "mail1")
    publish = config.hosts[0].publish

    # A certificate for another name is refused on the controller; no file on the host changes.
    before = _host_sha(container)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad_cert, bad_key, _ = _issue(config, host, bad_dir, names=("DNS:mail9.quangninh.test",))
    proc, doc = _qnprov("push", "tls", "-i", str(config.inventory), "--cert", str(bad_cert), "--key", str(bad_key))
    assert proc.returncode != 0
    assert doc["ok"] is False and doc["refused"].startswith("the certificate does not name host mail1"), doc
    assert _host_sha(container) == before

    # --check shows what would change, with the key as its size only, and changes nothing.
    good_dir = tmp_path / "good"
    good_dir.mkdir()
    cert, key, fingerprint = _issue(config, host, good_dir)
    proc, doc = _qnprov("push", "tls", "-i", str(config.inventory), "--cert", str(cert), "--key", str(key), "--check")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert doc["hosts"]["mail1"]["status"] == "changed"
    assert "/etc/qnprov/tls/privkey.pem: (secret, " in doc["hosts"]["mail1"]["diff"]
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    assert _host_sha(container) == before

    # The push: every endpoint serves the new certificate.
    proc, doc = _qnprov("push", "tls", "-i", str(config.inventory), "--cert", str(cert), "--key", str(key))
    assert proc.returncode == 0, (proc.stderr[-2000:], doc)
    result = doc["hosts"]["mail1"]
    assert result["status"] == "changed", result
    assert doc["certificate"]["sha256"] == fingerprint
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    endpoints = {"smtp": "starttls", "submission": "starttls", "submissions": "tls", "imaps": "tls",
                 "ldap": "tls", "https": "tls"}
    served = {name: _served(publish[name][0], kind, host.fqdn) for name, kind in endpoints.items()}
    assert served == dict.fromkeys(endpoints, fingerprint)
    after = _host_sha(container)
    assert after["/etc/qnprov/tls/ca.pem"] == before["/etc/qnprov/tls/ca.pem"]
    assert after["/etc/qnprov/tls/fullchain.pem"] != before["/etc/qnprov/tls/fullchain.pem"]
    print(f"push tls on the lab: {doc['seconds']:.1f} s (host {result['seconds']:.1f} s)")

    # Pushed again: nothing to do.
    proc, doc = _qnprov("push", "tls", "-i", str(config.inventory), "--cert", str(cert), "--key", str(key))
    assert proc.returncode == 0 and doc["hosts"]["mail1"]["status"] == "unchanged", doc

    # The other engine finds the host converged: not one task of the roles that write TLS
    # files (common's certificate set, openldap's copy for slapd) would change. The other
    # roles only name the files' paths; the whole site's no-change deploy is
    # test_idempotence_lab's, and test_push_lab's check covers the whole site in check mode.
    proc, deploy = _qnprov("deploy", "-i", str(config.inventory), "--check", "--tags", "common,openldap",
                           timeout=DEPLOY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    changed = {entry["task"] for entry in deploy["changed_tasks"]}
    assert changed == set(), changed
    assert deploy["hosts"]["mail1"]["changed"] == 0
    assert deploy["hosts"]["mail1"]["ok"] >= 40  # the two roles' tasks ran (92 on the lab), not an empty selection
