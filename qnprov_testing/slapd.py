"""A throw-away slapd on loopback, built from the project's own schema, ACLs and base DIT.

Used by the directory tests and by ``benchmarks/ldap_provision.py``. It runs the very
templates the openldap role deploys (``templates/openldap``), so a test that passes
here exercises the production ACLs, not a permissive stand-in.

The cn=config tree is built offline with ``slapadd -n0``; the ACL template (a
``changetype: modify`` LDIF, exactly as the role applies it) and the base entries are
then loaded through ldapi with SASL EXTERNAL and the root DN.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from qnprov import paths
from qnprov.directory.passwords import SLAPD_ARGON2_MODULE, SLAPD_ARGON2_MODULE_ARGS, SLAPD_PASSWORD_HASH
from qnprov.errors import ExternalError

TEMPLATES_DIR = paths.TEMPLATES_DIR / "openldap"
SYSTEM_SCHEMA_DIR = Path("/etc/ldap/schema")
SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
MODULE_DIR = Path("/usr/lib/ldap")
# qnprov's {ARGON2} module, built by the same script from the same source as the
# openldap role builds it on the controller (roles/openldap/tasks/argon2_module.yml).
ARGON2_MODULE_SOURCE = paths.ROLES_DIR / "openldap" / "files" / "qnprov_argon2.c"
ARGON2_MODULE_BUILD = paths.ROLES_DIR / "openldap" / "files" / "build-qnprov-argon2.sh"
_built_modules: dict[str, Path] = {}
_build_lock = threading.Lock()
DB_CONFIG_DN = "olcDatabase={1}mdb,cn=config"

# Equality indexes for every attribute the mail stack and the provisioner look up.
DB_INDEXES = (
    "objectClass eq",
    "uid,mail,mailLocalAddress,employeeNumber eq",
    "qnAccountStatus,qnAgencyCode,associatedDomain eq",
    "member eq",
    "cn,ou eq",
)


def ssha_hash(password: str) -> str:
    """An RFC 2307 {SSHA} hash (salted SHA-1), understood by every slapd."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def argon2_module() -> Path:
    """qnprov's {ARGON2} slapd module, built once per process (and per source version)."""
    source = ARGON2_MODULE_SOURCE.read_bytes()
    key = hashlib.sha256(source + ARGON2_MODULE_BUILD.read_bytes()).hexdigest()
    with _build_lock:
        if key not in _built_modules:
            build_dir = tempfile.mkdtemp(prefix="qnprov-argon2-")
            atexit.register(shutil.rmtree, build_dir, ignore_errors=True)
            out = Path(build_dir) / SLAPD_ARGON2_MODULE
            result = subprocess.run([str(ARGON2_MODULE_BUILD), str(ARGON2_MODULE_SOURCE), str(out)],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ExternalError("building the {ARGON2} module failed (scripts/bootstrap.sh installs gcc, "
                                    f"libargon2-dev, libldap-dev): {result.stderr.strip()}")
            _built_modules[key] = out
        return _built_modules[key]


def argon2_hash(password: str) -> str:
    """An {ARGON2} hash in the PHC format slapd's argon2 module reads."""
    from argon2 import PasswordHasher

    return "{ARGON2}" + PasswordHasher().hash(password)


TLS_SERVER_NAME = "ldap.qnprov.test"


def write_test_pki(directory: Path, server_name: str = TLS_SERVER_NAME,
                   ip_addresses: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for ``server_name`` (and ``ip_addresses``).

    Returns (ca.pem, server.pem, server.key). Like the lab, the server is reached on
    127.0.0.1, so clients must name the certificate's host explicitly. Replicating test
    providers reach each other as ldaps://127.0.0.1:PORT and verify that address
    (libldap checks an iPAddress name for a numeric host; it would replace "localhost"
    by the machine's own name).
    """
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qnprov test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(server_name)] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(key_fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class TestSlapd:
    """A running slapd and the credentials of its accounts."""

    workdir: Path
    port: int
    base_dn: str
    root_dn: str
    root_password: str
    service_passwords: dict[str, str]
    ldaps_port: int = 0
    ca_cert: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    __test__ = False  # not a pytest test class

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldapi_url(self) -> str:
        return "ldapi://" + urllib.parse.quote(str(self.workdir / "ldapi"), safe="")

    def service_dn(self, cn: str) -> str:
        return f"cn={cn},ou=services,{self.base_dn}"

    @property
    def writer_dn(self) -> str:
        return self.service_dn("qnprov")

    @property
    def writer_password(self) -> str:
        return self.service_passwords["qnprov"]

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) slapd on the same ports, config and database."""
        if self.process is not None and self.process.poll() is None:
            return
        listeners = f"{self.url}/ {self.ldaps_url}/ {self.ldapi_url}"
        with open(self.workdir / "slapd.log", "ab") as log:
            self.process = subprocess.Popen(
                # QNPROV_SLAPD_DEBUG=sync,stats puts slapd's own trace into slapd.log.
                [str(SLAPD), "-d", os.environ.get("QNPROV_SLAPD_DEBUG", "0"), "-F", str(self.workdir / "slapd.d"),
                 "-h", listeners],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        _wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def ldap_tool(self, tool: str, *args: str, input_text: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an OpenLDAP client tool (ldapadd, ldapsearch ...) bound as the root DN."""
        cmd = [tool, "-x", "-H", self.url, "-D", self.root_dn, "-w", self.root_password, *args]
        result = subprocess.run(cmd, input=input_text, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ExternalError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def ldapi_modify(self, ldif: str) -> None:
        """Apply LDIF to cn=config (or the data) as the local root, over ldapi with SASL EXTERNAL."""
        result = subprocess.run(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", self.ldapi_url],
                                input=ldif, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ExternalError(f"ldapmodify over ldapi failed: {result.stderr.strip()}")

    def count_entries(self, base: str | None = None, search_filter: str = "(objectClass=*)") -> int:
        out = self.ldap_tool("ldapsearch", "-LLL", "-b", base or self.base_dn, search_filter, "1.1").stdout
        return sum(1 for line in out.splitlines() if line.startswith("dn:"))


def _config_ldif(workdir: Path, base_dn: str, root_dn: str, root_hash: str,
                 pki: tuple[Path, Path, Path], replicator: bool = False,
                 schema_file: Path | None = None) -> str:
    schema_includes = "\n".join(
        f"include: file://{SYSTEM_SCHEMA_DIR / name}.ldif"
        for name in ("core", "cosine", "inetorgperson", "misc")
    )
    indexes = "\n".join(f"olcDbIndex: {index}" for index in DB_INDEXES)
    peer = f"gidNumber={os.getgid()}+uidNumber={os.getuid()},cn=peercred,cn=external,cn=auth"
    # What the role sets for the replicator (roles/openldap/tasks/config.yml): the
    # refresh reads the whole database, and entryCSN is what each refresh filters on.
    replicator_limits = (
        f'olcLimits: dn.exact="cn=replicator,ou=services,{base_dn}" size=unlimited time=unlimited\n'
        "olcDbIndex: entryCSN,entryUUID eq\n" if replicator else ""
    )
    return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {workdir}/slapd.pid
olcLogLevel: none
olcTLSCACertificateFile: {pki[0]}
olcTLSCertificateFile: {pki[1]}
olcTLSCertificateKeyFile: {pki[2]}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: back_mdb
olcModuleLoad: {argon2_module()} {SLAPD_ARGON2_MODULE_ARGS}

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schema_includes}
include: file://{schema_file or TEMPLATES_DIR / "qnprov-schema.ldif"}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcSizeLimit: 500
olcPasswordHash: {SLAPD_PASSWORD_HASH}

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact="{peer}" manage by * break

dn: {DB_CONFIG_DN}
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {workdir}/db
olcSuffix: {base_dn}
olcRootDN: {root_dn}
olcRootPW: {root_hash}
olcDbMaxSize: 2147483648
olcLimits: dn.exact="cn=qnprov,ou=services,{base_dn}" size=unlimited time=unlimited
{replicator_limits}{indexes}
"""


def _render(template: str, **variables: object) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # what Ansible's template module does
        autoescape=False,  # noqa: S701 - LDIF, not HTML
    )
    return env.get_template(template).render(**variables)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ExternalError(f"slapd exited with {process.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ExternalError(f"slapd did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def start_test_slapd(
    workdir: Path,
    *,
    base_dn: str = "dc=quangninh,dc=test",
    organization: str = "Quang Ninh provincial official mail (test)",
    hosted_domains: tuple[str, ...] = ("quangninh.test",),
    no_sync: bool = True,
    pki: tuple[Path, Path, Path] | None = None,
    port: int | None = None,
    ldaps_port: int | None = None,
    service_passwords: dict[str, str] | None = None,
    replicator: bool = False,
    seed: bool = True,
    schema_file: Path | None = None,
) -> TestSlapd:
    """Build cn=config in ``workdir`` and start slapd on a free loopback port.

    ``no_sync`` skips fsync in mdb: tests and benchmarks measure the protocol path,
    and ldapadd and qnprov are compared on the same server either way.

    For replication tests (:func:`enable_replication`): ``pki`` shares one CA and
    certificate between servers, ``port``/``ldaps_port`` fix the ports before the peer
    exists, ``service_passwords`` gives every provider the same accounts,
    ``replicator`` adds cn=replicator with the role's ACLs and limits, and
    ``seed=False`` leaves the database empty for replication to fill.
    ``schema_file`` replaces templates/openldap/qnprov-schema.ldif (a directory built
    by an older release).
    """
    for tool in (SLAPD, SLAPADD):
        if not tool.exists():
            raise ExternalError(f"{tool} is missing; install the slapd package")
    confdir, dbdir = workdir / "slapd.d", workdir / "db"
    confdir.mkdir(parents=True)
    dbdir.mkdir()
    root_dn = f"cn=admin,{base_dn}"
    root_password = secrets.token_urlsafe(18)
    pki = pki or write_test_pki(workdir)
    config = _config_ldif(workdir, base_dn, root_dn, ssha_hash(root_password), pki, replicator=replicator,
                          schema_file=schema_file)
    if no_sync:
        config += "olcDbNoSync: TRUE\n"
    (workdir / "config.ldif").write_text(config)
    result = subprocess.run(
        [str(SLAPADD), "-n0", "-F", str(confdir), "-l", str(workdir / "config.ldif")],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise ExternalError(f"slapadd -n0 failed: {result.stderr.strip()}")

    accounts = ["postfix", "dovecot", "qnprov"] + (["replicator"] if replicator else [])
    passwords = dict(service_passwords or {})
    for cn in accounts:
        passwords.setdefault(cn, secrets.token_urlsafe(18))
    server = TestSlapd(workdir=workdir, port=port or free_loopback_port(),
                       ldaps_port=ldaps_port or free_loopback_port(), ca_cert=pki[0],
                       base_dn=base_dn, root_dn=root_dn, root_password=root_password,
                       service_passwords=passwords)
    try:
        server.start()
        access = _render("access.ldif.j2", openldap_db_dn=DB_CONFIG_DN, openldap_base_dn=base_dn,
                         openldap_service_readers=["postfix", "dovecot"],
                         openldap_service_writers=["qnprov"],
                         openldap_service_replicators=["replicator"] if replicator else [])
        server.ldapi_modify(access)
        if seed:
            descriptions = {"postfix": "Postfix lookups (read-only)", "dovecot": "Dovecot lookups (read-only)",
                            "qnprov": "qnprov provisioning (writer)",
                            "replicator": "Directory replication between providers (read-only)"}
            services = []
            for cn in accounts:
                # The writer gets an {ARGON2} hash, which also proves the argon2 module loads.
                password = passwords[cn]
                services.append({"cn": cn, "description": descriptions[cn],
                                 "password_hash": argon2_hash(password) if cn == "qnprov" else ssha_hash(password)})
            dit = _render("dit.ldif.j2", openldap_base_dn=base_dn, openldap_organization=organization,
                          openldap_hosted_domains=list(hosted_domains), openldap_service_accounts=services)
            server.ldap_tool("ldapadd", input_text=dit)
    except BaseException:
        server.stop()
        raise
    return server


def render_replication(server: TestSlapd, *, server_id: int, peers: list[str], password: str,
                       retry: str = "1 +") -> str:
    """templates/openldap/replication.ldif.j2 rendered for ``server``, as the role renders it."""
    assert server.ca_cert is not None
    return _render("replication.ldif.j2", openldap_db_dn=DB_CONFIG_DN, openldap_base_dn=server.base_dn,
                   openldap_server_id=server_id, openldap_replication_peers=peers,
                   openldap_replication_password=password,
                   openldap_replication_ca_file=str(server.ca_cert), openldap_replication_retry=retry)


def enable_replication(server: TestSlapd, *, server_id: int, peers: list[str], retry: str = "1 +") -> None:
    """Turn ``server`` into a multi-provider that pulls from ``peers`` (ldaps:// URIs)."""
    server.ldapi_modify(render_replication(server, server_id=server_id, peers=peers,
                                           password=server.service_passwords["replicator"], retry=retry))


@contextlib.contextmanager
def running_test_slapd(parent: Path | None = None, **kwargs: object) -> Iterator[TestSlapd]:
    """Context manager: a fresh slapd in a temporary directory, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="qnslapd-", dir=parent))
    server: TestSlapd | None = None
    try:
        server = start_test_slapd(workdir, **kwargs)  # type: ignore[arg-type]
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class TcpLink:
    """A loopback TCP relay standing for the network between two providers.

    Provider A's syncrepl points at the link's port, which forwards to provider B's
    ldaps port (TLS passes through untouched). :meth:`cut` drops every open
    connection and refuses new ones, so both providers keep running and taking
    writes while cut off from each other; :meth:`restore` reconnects them.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.port = port or free_loopback_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class ReplicatedPair:
    """Two multi-provider slapds replicating over ldaps through :class:`TcpLink` s."""

    first: TestSlapd
    second: TestSlapd
    # first pulls from second through to_second, second from first through to_first
    to_second: TcpLink
    to_first: TcpLink

    def cut(self) -> None:
        self.to_second.cut()
        self.to_first.cut()

    def restore(self) -> None:
        self.to_second.restore()
        self.to_first.restore()


@contextlib.contextmanager
def running_replicated_pair(parent: Path | None = None, *, retry: str = "1 +") -> Iterator[ReplicatedPair]:
    """Providers 1 and 2, configured from templates/openldap/replication.ldif.j2.

    One test CA and one certificate (for 127.0.0.1 too) serve both; each provider
    verifies the other against it (tls_reqcert=demand). Like the role on two fresh
    hosts, only provider 1 writes the base DIT; provider 2 starts empty and receives
    it by replication. Returns once provider 2 holds the replicator's entry.
    """
    workdir = Path(tempfile.mkdtemp(prefix="qnrepl-", dir=parent))
    servers: list[TestSlapd] = []
    links: list[TcpLink] = []
    try:
        (workdir / "pki").mkdir()
        pki = write_test_pki(workdir / "pki", ip_addresses=("127.0.0.1",))
        ldaps_ports = (free_loopback_port(), free_loopback_port())
        to_second, to_first = TcpLink(ldaps_ports[1]), TcpLink(ldaps_ports[0])
        links += [to_second, to_first]
        # A blank and a single quote in the password prove the template quotes it for slapd.
        replicator_password = "repl'ica tor-" + secrets.token_urlsafe(12)
        first = start_test_slapd(workdir / "p1", pki=pki, ldaps_port=ldaps_ports[0], replicator=True,
                                 service_passwords={"replicator": replicator_password})
        servers.append(first)
        enable_replication(first, server_id=1, peers=[f"ldaps://127.0.0.1:{to_second.port}"], retry=retry)
        second = start_test_slapd(workdir / "p2", pki=pki, ldaps_port=ldaps_ports[1], replicator=True,
                                  seed=False, service_passwords=first.service_passwords)
        servers.append(second)
        enable_replication(second, server_id=2, peers=[f"ldaps://127.0.0.1:{to_first.port}"], retry=retry)
        for link in links:
            link.restore()
        deadline = time.monotonic() + 30
        while second.ldap_tool("ldapsearch", "-LLL", "-b", second.service_dn("replicator"), "-s", "base", "1.1",
                               check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ExternalError("provider 2 did not receive the base DIT from provider 1 within 30 s")
            time.sleep(0.05)
        yield ReplicatedPair(first, second, to_second, to_first)
    finally:
        for link in links:
            link.cut()
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
