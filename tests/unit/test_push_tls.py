"""qnprov push tls without a lab: the controller's checks, the files, one host's transaction.

Certificates are made here with the ``cryptography`` package (a CA, leaves, a stranger CA).
The transaction runs its real shell commands on this machine (:class:`LocalRemote`) in a
temporary directory with a stand-in ``systemctl`` (as tests/unit/test_push.py); the probe
reads a real TLS server on loopback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qnprov import inventory, paths
from qnprov.errors import InputError
from qnprov.push import tls
from qnprov.push.remote import LocalRemote
from qnprov_testing.certs import role_like_server_certificate

NOW = dt.datetime.now(dt.UTC)
FQDN = "mail1.quangninh.test"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: object) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption())


def make_ca(name: str = "qnprov test CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(issuer: x509.Certificate, issuer_key: object, *, names: list[str] | None = None,
              key: object | None = None, not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None, ca: bool = False) -> tuple[x509.Certificate, object]:
    key = key or _key()
    sans: list[x509.GeneralName] = []
    for name in names if names is not None else [FQDN, "localhost", "127.0.0.1"]:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or [FQDN])[0])]))
               .issuer_name(issuer.subject).public_key(key.public_key())  # type: ignore[attr-defined]
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
               .not_valid_after(not_after or NOW + dt.timedelta(days=90)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    else:
        builder = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(issuer_key, hashes.SHA256()), key  # type: ignore[arg-type]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture()
def ca(tmp_path: Path) -> tuple[x509.Certificate, object, Path]:
    cert, key = make_ca()
    path = tmp_path / "ca.crt"
    path.write_bytes(_pem(cert))
    return cert, key, path


def _host(ca_path: Path, source: str = "lab_ca", root: Path | None = None, **extra: object) -> tls.HostTls:
    base = root or Path("/etc/qnprov/tls")
    values: dict[str, object] = {
        "host": "mail1", "source": source, "fqdn": FQDN, "sans": (f"DNS:{FQDN}", "DNS:localhost", "IP:127.0.0.1"),
        "ca_path": str(ca_path), "cert_file": f"{base}/fullchain.pem", "key_file": f"{base}/privkey.pem",
        "ca_file": f"{base}/ca.pem"}
    values.update(extra)
    return tls.HostTls(**values)  # type: ignore[arg-type]


def _material(tmp_path: Path, cert: x509.Certificate, key: object, chain: list[x509.Certificate] = ()) -> tls.Material:
    (tmp_path / "cert.pem").write_bytes(_pem(cert))
    (tmp_path / "key.pem").write_bytes(_pem_key(key))
    chain_file = None
    if chain:
        chain_file = tmp_path / "chain.pem"
        chain_file.write_bytes(b"".join(_pem(c) for c in chain))
    return tls.load_material(tmp_path / "cert.pem", tmp_path / "key.pem", chain_file)


def _refused(material: tls.Material, host: tls.HostTls) -> str:
    with pytest.raises(InputError) as caught:
        tls.check_material(material, [host])
    return str(caught.value)


# ----------------------------------------------------------------------------- the checks


def test_a_good_certificate_passes_every_check(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1])
    material = _material(tmp_path, cert, key)
    tls.check_material(material, [_host(ca[2])])  # no refusal
    assert material.fingerprint == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, ca: tuple) -> None:
    cert, _ = make_leaf(ca[0], ca[1])
    message = _refused(_material(tmp_path, cert, _key()), _host(ca[2]))
    assert message.startswith("the key does not match the certificate (CN=mail1.quangninh.test)")


def test_an_expired_certificate_is_refused(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1], not_before=NOW - dt.timedelta(days=100), not_after=NOW - dt.timedelta(days=1))
    message = _refused(_material(tmp_path, cert, key), _host(ca[2]))
    assert "has expired: notAfter was" in message


def test_a_certificate_not_valid_yet_is_refused(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1], not_before=NOW + dt.timedelta(days=2))
    message = _refused(_material(tmp_path, cert, key), _host(ca[2]))
    assert "is not valid yet: notBefore is" in message


def test_a_certificate_for_another_name_is_refused(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1], names=["mail2.quangninh.test", "localhost", "127.0.0.1"])
    message = _refused(_material(tmp_path, cert, key), _host(ca[2]))
    assert message.startswith("the certificate does not name host mail1")
    assert "lacks DNS:mail1.quangninh.test" in message


def test_a_missing_extra_name_is_refused_too(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1], names=[FQDN])
    message = _refused(_material(tmp_path, cert, key), _host(ca[2]))
    assert "lacks DNS:localhost, IP:127.0.0.1" in message


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path, ca: tuple) -> None:
    stranger, stranger_key = make_ca("someone else's CA")
    cert, key = make_leaf(stranger, stranger_key)
    message = _refused(_material(tmp_path, cert, key), _host(ca[2]))
    assert message.startswith("the certificate chain does not lead to the CA the inventory trusts")
    assert "qnprov test CA" in message


def test_a_chain_through_an_intermediate_to_the_ca_passes_and_a_wrong_one_is_refused(tmp_path: Path,
                                                                                      ca: tuple) -> None:
    intermediate, intermediate_key = make_leaf(ca[0], ca[1], names=["qnprov intermediate"], ca=True)
    cert, key = make_leaf(intermediate, intermediate_key)
    tls.check_material(_material(tmp_path, cert, key, [intermediate]), [_host(ca[2], source="files")])
    # Without the intermediate the leaf does not reach the CA.
    message = _refused(_material(tmp_path, cert, key), _host(ca[2], source="files"))
    assert "does not lead to the CA the inventory trusts" in message
    # An intermediate that did not issue the leaf breaks the chain where it breaks.
    other, _ = make_leaf(ca[0], ca[1], names=["another intermediate"], ca=True)
    message = _refused(_material(tmp_path, cert, key, [other]), _host(ca[2], source="files"))
    assert message.startswith("the chain is broken: CN=mail1.quangninh.test was not issued by the next certificate")


def test_the_lab_refuses_a_key_its_roles_would_replace(tmp_path: Path, ca: tuple) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert, key = make_leaf(ca[0], ca[1], key=rsa_key)
    message = _refused(_material(tmp_path, cert, key), _host(ca[2]))
    assert "keep an ECC P-256 key" in message
    tls.check_material(_material(tmp_path, cert, key), [_host(ca[2], source="files")])  # files mode takes it


def test_an_encrypted_key_is_refused_without_showing_it(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1])
    (tmp_path / "cert.pem").write_bytes(_pem(cert))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(InputError, match="is encrypted"):
        tls.load_material(tmp_path / "cert.pem", tmp_path / "key.pem")


# ----------------------------------------------------------------------------- the files


def test_the_lab_files_are_what_roles_common_writes(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1])
    material = _material(tmp_path, cert, key)
    files = {f.path: f for f in tls.host_files(material, _host(ca[2], slapd_key_file="/etc/ldap/tls/privkey.pem"))}
    chain = files["/etc/qnprov/tls/fullchain.pem"]
    # tls_lab_ca.yml: "{{ leaf | trim }}\n{{ ca | trim }}\n", root 0644.
    assert chain.content == _pem(cert).strip() + b"\n" + _pem(ca[0]).strip() + b"\n"
    assert (chain.owner, chain.group, chain.mode) == ("root", "root", "644")
    assert files["/etc/qnprov/tls/cert.pem"].content == _pem(cert)
    assert files["/etc/qnprov/tls/privkey.pem"].mode == "600" and files["/etc/qnprov/tls/privkey.pem"].secret
    slapd = files["/etc/ldap/tls/privkey.pem"]
    assert (slapd.owner, slapd.group, slapd.mode) == ("openldap", "openldap", "400")
    checksum = hashlib.sha1(chain.content, usedforsecurity=False).hexdigest()
    assert files["/etc/ldap/tls/cert.sha1"].content == checksum.encode() + b"\n"
    csr = x509.load_pem_x509_csr(files["/etc/qnprov/tls/host.csr"].content)
    assert csr.is_signature_valid and csr.public_key() == key.public_key()  # type: ignore[attr-defined]
    assert csr.subject.rfc4514_string() == f"CN={FQDN}"
    assert csr.extensions.get_extension_for_class(x509.KeyUsage).critical


def test_files_mode_writes_the_operators_bytes_and_says_when_the_inventory_differs(tmp_path: Path, ca: tuple) -> None:
    intermediate, intermediate_key = make_leaf(ca[0], ca[1], names=["qnprov intermediate"], ca=True)
    cert, key = make_leaf(intermediate, intermediate_key)
    material = _material(tmp_path, cert, key, [intermediate])
    old = tmp_path / "old.pem"
    old.write_bytes(b"previous\n")
    host = _host(ca[2], source="files", cert_src=str(old), key_src=str(tmp_path / "key.pem"))
    files = {f.path: f for f in tls.host_files(material, host)}
    assert files["/etc/qnprov/tls/fullchain.pem"].content == _pem(cert) + _pem(intermediate)
    assert files["/etc/qnprov/tls/privkey.pem"].content == (tmp_path / "key.pem").read_bytes()
    assert "/etc/qnprov/tls/cert.pem" not in files
    notes = tls.inventory_notes(material, host)
    assert len(notes) == 1 and notes[0].startswith(f"common_tls_cert_src ({old}) does not hold the pushed bytes")


def test_a_diff_never_shows_the_key(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1])
    material = _material(tmp_path, cert, key)
    text = "".join(tls.file_diff(f, None) for f in tls.host_files(material, _host(ca[2])))
    assert f"/etc/qnprov/tls/privkey.pem: (secret, {len(material.key_pem)} bytes)" in text
    assert "PRIVATE KEY" not in text and material.key_pem.decode() not in text
    assert "CN=mail1.quangninh.test, serial" in text


def test_the_lab_inventory_is_read_as_the_roles_read_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QNPROV_STATE_DIR", "/srv/state")
    host = tls.host_tls(inventory.load(paths.INVENTORIES_DIR / "lab"), "mail1")
    assert (host.source, host.fqdn, host.ca_path) == ("lab_ca", FQDN, "/srv/state/ca/ca.crt")
    assert "DNS:mta-sts.quangninh.test" in host.sans and "IP:127.0.0.1" in host.sans
    assert host.slapd_key_file == "/etc/ldap/tls/privkey.pem"
    assert host.services == ("postfix", "nginx", "dovecot", "slapd")
    assert sorted(p for _, p, _ in host.probes) == [10025, 10443, 10465, 10587, 10636, 10993]


# ----------------------------------------------------------------------------- one host


def _systemctl(tmp_path: Path, fail: str = "") -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                      + (f'case "$*" in *"{fail}"*) exit 1;; esac\n' if fail else "") + "exit 0\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _live(tmp_path: Path, ca: tuple) -> tuple[tls.HostTls, tls.Material, tls.Material]:
    root = tmp_path / "etc"
    root.mkdir()
    host = _host(ca[2], root=root, services=("postfix", "dovecot"))
    old_cert, old_key = make_leaf(ca[0], ca[1])
    (tmp_path / "old").mkdir()
    old = _material(tmp_path / "old", old_cert, old_key)
    for f in tls.host_files(old, host):
        Path(f.path).write_bytes(f.content)
        os.chmod(f.path, int(f.mode, 8))
    new_cert, new_key = make_leaf(ca[0], ca[1])
    (tmp_path / "new").mkdir()
    return host, old, _material(tmp_path / "new", new_cert, new_key)


def _shas(host: tls.HostTls, material: tls.Material) -> dict[str, str]:
    return {f.path: hashlib.sha256(Path(f.path).read_bytes()).hexdigest() for f in tls.host_files(material, host)}


def test_a_push_publishes_reloads_and_leaves_no_stage(tmp_path: Path, ca: tuple) -> None:
    host, _, new = _live(tmp_path, ca)
    remote = LocalRemote("mail1", env=_systemctl(tmp_path))
    result = tls.push_host_tls(remote, new, host, probe_fn=lambda h, fp: [])
    assert result.status == "changed", result.message
    assert result.action == "reload postfix, dovecot"
    wanted = {f.path: f for f in tls.host_files(new, host)}
    on_disk = _shas(host, new)
    assert {p: sha for p, sha in on_disk.items() if not p.endswith(".csr")} == {
        p: f.sha256 for p, f in wanted.items() if not p.endswith(".csr")}
    assert tls.csr_current(Path(host.csr_file).read_bytes(), new, host)  # a CSR for the new key
    assert stat.S_IMODE(os.stat(host.key_file).st_mode) == 0o600
    assert (tmp_path / "systemctl.log").read_text().split("\n")[:2] == ["reload postfix", "is-active --quiet postfix"]
    assert not [p for p in Path(host.cert_file).parent.iterdir() if ".qnprov-" in p.name]
    staged_key = f"{Path(host.key_file).parent}/.privkey.pem.qnprov-new"
    assert f"rm -f -- {staged_key} && install -m 0600 /dev/null {staged_key}" in remote.commands  # 0600 first
    again = tls.push_host_tls(remote, new, host, probe_fn=lambda h, fp: [])
    assert (again.status, again.files) == ("unchanged", [])


def test_a_service_that_fails_puts_the_previous_files_back(tmp_path: Path, ca: tuple) -> None:
    host, old, new = _live(tmp_path, ca)
    before = _shas(host, old)
    remote = LocalRemote("mail1", env=_systemctl(tmp_path, fail="reload dovecot"))
    result = tls.push_host_tls(remote, new, host, probe_fn=lambda h, fp: [])
    assert result.status == "failed"
    assert result.message.startswith("a service did not come back")
    assert _shas(host, old) == before
    assert not [p for p in Path(host.cert_file).parent.iterdir() if ".qnprov-" in p.name]


def test_an_endpoint_not_serving_the_new_certificate_rolls_back(tmp_path: Path, ca: tuple) -> None:
    host, old, new = _live(tmp_path, ca)
    before = _shas(host, old)
    remote = LocalRemote("mail1", env=_systemctl(tmp_path))
    result = tls.push_host_tls(remote, new, host, probe_fn=lambda h, fp: ["127.0.0.1:993 serves sha256 0000"])
    assert result.status == "failed" and "127.0.0.1:993 serves sha256 0000" in result.message
    assert _shas(host, old) == before


def test_check_writes_nothing_and_the_diff_hides_the_key(tmp_path: Path, ca: tuple) -> None:
    host, old, new = _live(tmp_path, ca)
    before = _shas(host, old)
    remote = LocalRemote("mail1", env=_systemctl(tmp_path))
    result = tls.push_host_tls(remote, new, host, check=True, probe_fn=lambda h, fp: pytest.fail("probed"))
    assert result.status == "changed" and result.message.startswith("would change; the lab CA tasks will re-issue")
    assert _shas(host, old) == before and not (tmp_path / "systemctl.log").exists()
    assert "(secret, " in result.diff and "PRIVATE KEY" not in result.diff


def test_the_probe_reads_the_certificate_a_tls_server_serves(tmp_path: Path, ca: tuple) -> None:
    cert, key = make_leaf(ca[0], ca[1])
    (tmp_path / "c.pem").write_bytes(_pem(cert))
    (tmp_path / "k.pem").write_bytes(_pem_key(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    der = tls.fetch_served("127.0.0.1", port, None, FQDN)
    thread.join(5)
    listener.close()
    assert der == cert.public_bytes(serialization.Encoding.DER)


def test_the_lab_note_says_when_the_role_would_re_issue_the_certificate(tmp_path: Path, ca: tuple) -> None:
    host = _host(ca[2])
    key = _key()
    plain, _ = make_leaf(ca[0], ca[1], key=key)  # no keyUsage, no key identifiers
    notes = tls.inventory_notes(_material(tmp_path, plain, key), host)
    assert len(notes) == 1 and notes[0].startswith("the lab CA tasks will re-issue this certificate")
    sans = [x509.DNSName(FQDN), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    like_the_role = role_like_server_certificate(FQDN, sans, key, ca[0], ca[1], not_before=NOW - dt.timedelta(hours=1),
                                                 not_after=NOW + dt.timedelta(days=90))
    assert tls.inventory_notes(_material(tmp_path, like_the_role, key), host) == []
