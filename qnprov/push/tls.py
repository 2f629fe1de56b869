"""``qnprov push tls``: a new certificate and key on every host that serves TLS, checked first.

**Checked on the controller, before any host is touched** (:func:`qnprov.push.tlscheck.check_material`): the key
belongs to the certificate; the certificate and any intermediates chain up to the CA the
inventory trusts (``common_lab_ca_dir``/ca.crt with ``common_tls_source: lab_ca``, else
``common_tls_ca_src``); the certificate names every target host the way roles/common issues
it (``common_tls_fqdn`` and ``common_tls_extra_sans``); it is valid now (not before its
notBefore, not after its notAfter). Any refusal names the problem and nothing is written.

**What is written** (:func:`qnprov.push.tlsfiles.host_files`) is what the roles write, byte for byte, with their
owners and modes, so a later ``qnprov deploy --check`` finds nothing to change:

* roles/common: ``qnprov_tls_cert_file`` (the chain, root 0644) and ``qnprov_tls_key_file``
  (root 0600). With ``common_tls_source: files`` the chain is the ``--cert`` file's bytes
  followed by the ``--chain`` file's, and the key the ``--key`` file's bytes: the inventory's
  ``common_tls_cert_src``/``common_tls_key_src`` are the truth and must hold those same bytes
  (the result says when they do not). With ``lab_ca`` the chain is leaf + lab CA, as the role
  writes it, plus the bare leaf (``cert.pem``) and a signing request (``host.csr``) for the
  new key with the role's subject and extensions, so the role's re-run keeps the certificate;
* roles/openldap (group ``directory``): slapd's copy of the key (openldap 0400) and
  ``cert.sha1``, the checksum by which the role knows which chain slapd was started with.

**One transaction per host** (:func:`push_host_tls`): each file is staged beside itself
(``.<name>.qnprov-new``) with its owner and mode, the staged pair is validated on the host
(openssl reads both, and the key's public half is the certificate's), the live files are kept
as ``.<name>.qnprov-prev``, the stage is renamed in; then Postfix, Dovecot and nginx are
reloaded and slapd restarted (it reads its certificate only at start, as the role's handler
knows), and every TLS endpoint is probed from the controller until it serves the new
certificate (sha256 of the DER). A service that does not come back, or an endpoint that does
not serve the new certificate, puts the previous files back, reloads again, and fails the host.

The private key never leaves these modules as text: diffs show ``(secret, N bytes)``.

The checks live in :mod:`qnprov.push.tlscheck`, the files in :mod:`qnprov.push.tlsfiles`;
this module is the transaction, the probe and the run over the inventory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from shlex import quote as _q
from typing import Any

from qnprov.inventory import Inventory
from qnprov.push.apply import HostResult, current_state, read_file, stage_file, staged_name
from qnprov.push.remote import Remote, tail
from qnprov.push.run import OnHost, PushResult, each_host
from qnprov.push.tlscheck import (
    HostTls,
    Material,
    check_material,
    host_tls,
    load_material,
    prepare,
)
from qnprov.push.tlsfiles import TlsFile, csr_current, file_diff, host_files, inventory_notes

PROBE_TIMEOUT = 20.0


# ----------------------------------------------------------------------------- one host


def fetch_served(address: str, port: int, starttls: str | None, server_name: str,
                 timeout: float = 10.0) -> bytes:
    """The DER certificate an endpoint serves (STARTTLS for SMTP), without trusting it: the
    caller compares fingerprints."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as raw:
        if starttls == "smtp":
            reader = raw.makefile("rb")

            def reply() -> str:
                while True:
                    line = reader.readline().decode("ascii", "replace")
                    if not line:
                        raise OSError("connection closed during the SMTP greeting")
                    if len(line) < 4 or line[3] != "-":
                        return line

            if not reply().startswith("220"):
                raise OSError("no SMTP greeting")
            raw.sendall(b"EHLO qnprov-push-tls.invalid\r\n")
            if not reply().startswith("250"):
                raise OSError("EHLO refused")
            raw.sendall(b"STARTTLS\r\n")
            answer = reply()
            if not answer.startswith("220"):
                raise OSError(f"STARTTLS refused: {answer.strip()}")
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("no certificate served")
    return der


def probe(host: HostTls, fingerprint: str, *, deadline: float = PROBE_TIMEOUT) -> list[str]:
    """Every endpoint of the host, until each serves ``fingerprint`` or the deadline passes;
    the endpoints that did not, with why."""
    pending = {(a, p): s for a, p, s in host.probes}
    why: dict[tuple[str, int], str] = {}
    end = time.monotonic() + deadline
    while pending:
        for (address, port), starttls in list(pending.items()):
            try:
                served = hashlib.sha256(fetch_served(address, port, starttls, host.fqdn)).hexdigest()
            except (OSError, ssl.SSLError) as exc:
                why[(address, port)] = f"{type(exc).__name__}: {exc}"
                continue
            if served == fingerprint:
                del pending[(address, port)]
                why.pop((address, port), None)
            else:
                why[(address, port)] = f"serves sha256 {served[:16]}"
        if not pending or time.monotonic() > end:
            break
        time.sleep(0.5)
    return [f"{address}:{port} {why.get((address, port), 'no answer')}" for address, port in sorted(pending)]


@dataclass
class TlsHostResult(HostResult):
    probed: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        doc = super().as_json()
        doc["probed"] = self.probed
        return doc


def _restart_services(remote: Remote, services: Sequence[str]) -> tuple[bool, str]:
    steps = []
    for service in services:
        verb = "restart" if service == "slapd" else "reload"
        steps.append(f"systemctl {verb} {service} && systemctl is-active --quiet {service}")
    if not steps:
        return True, ""
    ran = remote.run(" && ".join(steps) + " 2>&1")
    return ran.ok, tail(ran.stdout + ran.stderr)


def push_host_tls(remote: Remote, material: Material, host: HostTls, *, check: bool = False, diff: bool = False,
                  probe_fn: Callable[[HostTls, str], list[str]] = probe) -> TlsHostResult:
    started = time.monotonic()
    result = TlsHostResult(remote.name, "unchanged")
    try:
        _push_tls(remote, material, host, result, check=check, diff=diff, probe_fn=probe_fn)
    except OSError as exc:
        result.status, result.message = "failed", str(exc)
    result.seconds = time.monotonic() - started
    return result


def _push_tls(remote: Remote, material: Material, host: HostTls, result: TlsHostResult, *, check: bool, diff: bool,
              probe_fn: Callable[[HostTls, str], list[str]]) -> None:
    files = host_files(material, host)
    state = current_state(remote, [f.path for f in files])
    for index, f in enumerate(files):
        wanted_state = (f"{f.owner}:{f.group}:{f.mode}", f.sha256)
        if f.kind == "csr" and state[f.path] is not None and state[f.path] != wanted_state:
            existing = read_file(remote, f.path)
            if existing is not None and csr_current(existing, material, host):
                files[index] = dataclasses.replace(f, content=existing)
    changed = [f for f in files if state[f.path] != (f"{f.owner}:{f.group}:{f.mode}", f.sha256)]
    result.files = [f.path for f in changed]
    notes = inventory_notes(material, host)
    if not changed:
        result.message = "; ".join(["the certificate is already in place", *notes])
        return
    result.status = "changed"
    if check or diff:
        result.diff = "".join(file_diff(f, None if f.secret else read_file(remote, f.path)) for f in changed)
    if check:
        result.message = "; ".join(["would change", *notes])
        return
    # Stage every file beside itself, with its owner and mode.
    for f in changed:
        remote.run(f"mkdir -p -- {_q(str(PurePosixPath(f.path).parent))}")
        try:
            stage_file(remote, f.path, f.content, f.owner, f.group, f.mode, secret=f.secret)
        except OSError:
            _drop(remote, changed)
            raise
    # Validate the staged pair on the host.
    cert = next(f for f in files if f.path == host.cert_file)
    key = next(f for f in files if f.path == host.key_file)
    cert_path = staged_name(cert.path, "new") if cert in changed else cert.path
    key_path = staged_name(key.path, "new") if key in changed else key.path
    ran = remote.run(
        f"a=$(openssl x509 -in {_q(cert_path)} -noout -pubkey) && b=$(openssl pkey -in {_q(key_path)} -pubout) "
        f"&& [ \"$a\" = \"$b\" ] && echo pair-ok")
    if not ran.ok or "pair-ok" not in ran.stdout:
        _drop(remote, changed)
        raise OSError("the staged certificate and key failed openssl's check on the host; the running files were kept")
    # Publish: keep the live files, rename the stage in.
    publish = " && ".join(
        f"{{ if [ -f {_q(f.path)} ]; then cp -a -- {_q(f.path)} {_q(staged_name(f.path, 'prev'))}; "
        f"else rm -f -- {_q(staged_name(f.path, 'prev'))}; fi; }} "
        f"&& mv -f -- {_q(staged_name(f.path, 'new'))} {_q(f.path)}"
        for f in changed)
    ran = remote.run(publish)
    if not ran.ok:
        _roll_back(remote, changed, host.services)
        raise OSError(f"publishing failed, previous files restored: {tail(ran.stderr)}")
    ok, output = _restart_services(remote, host.services)
    failures = [] if not ok else probe_fn(host, material.fingerprint)
    if not ok or failures:
        _roll_back(remote, changed, host.services)
        why = f"a service did not come back ({output})" if not ok else "not served: " + "; ".join(failures)
        raise OSError(f"{why}; previous files restored and services reloaded")
    result.probed = [f"{a}:{p}" for a, p, _ in host.probes]
    remote.run(" ; ".join(f"rm -f -- {_q(staged_name(f.path, 'prev'))}" for f in changed))
    reloaded = [s for s in host.services if s != "slapd"]
    action = (["reload " + ", ".join(reloaded)] if reloaded else []) + (["restart slapd"] if "slapd" in host.services
                                                                         else [])
    result.action = "; ".join(action) or None
    result.message = "; ".join([f"{len(changed)} file(s) written, {len(host.probes)} endpoint(s) serve "
                                f"sha256 {material.fingerprint[:16]}", *notes])


def _drop(remote: Remote, files: Sequence[TlsFile]) -> None:
    remote.run(" ; ".join(f"rm -f -- {_q(staged_name(f.path, 'new'))}" for f in files))


def _roll_back(remote: Remote, files: Sequence[TlsFile], services: Sequence[str]) -> None:
    remote.run(" ; ".join(
        f"if [ -f {_q(staged_name(f.path, 'prev'))} ]; then mv -f -- {_q(staged_name(f.path, 'prev'))} {_q(f.path)}; "
        f"else rm -f -- {_q(f.path)}; fi ; rm -f -- {_q(staged_name(f.path, 'new'))}" for f in files))
    _restart_services(remote, services)


def push_tls(inventory: Inventory, material: Material, *, limit: str | None = None, check: bool = False,
             diff: bool = False, on_host: OnHost | None = None,
             prepared: dict[str, HostTls] | None = None) -> PushResult:
    """Check (unless ``prepared`` says it was done), then push to every host, one transaction each."""
    started = time.monotonic()
    hosts = prepared if prepared is not None else prepare(inventory, material, limit)
    result = each_host(inventory, "tls", sorted(hosts),
                       lambda remote: push_host_tls(remote, material, hosts[remote.name], check=check, diff=diff),
                       check=check, on_host=on_host, failed=lambda host, why: TlsHostResult(host, "failed",
                                                                                            message=why))
    result.seconds = time.monotonic() - started
    return result


__all__ = ["HostTls", "Material", "TlsFile", "check_material", "csr_current", "fetch_served", "file_diff",
           "host_files", "host_tls", "inventory_notes", "load_material", "prepare", "probe", "push_host_tls",
           "push_tls"]
