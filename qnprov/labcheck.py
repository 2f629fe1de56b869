"""What the lab looks like from outside: its status document and the smoke test.

``qnprov lab status`` prints :func:`status`; ``qnprov lab up`` and ``qnprov lab smoke``
run :func:`smoke` (authenticated submission on 587 from one demo account, IMAP fetch by
another, with only the lab CA trusted). The containers, secrets and SSH set-up are in
:mod:`qnprov.lab`.
"""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from qnprov.errors import ConfigError, ExternalError
from qnprov.lab import ADMIN_SECRET, SERVICES, LabConfig, LabHost, container_state, podman


def service_states(container: str) -> dict[str, str]:
    proc = podman("exec", container, "systemctl", "is-active", *SERVICES, check=False)
    states = proc.stdout.split()
    return {svc: (states[i] if i < len(states) else "unknown") for i, svc in enumerate(SERVICES)}


def status(config: LabConfig) -> dict[str, Any]:
    """The lab's status document (what ``qnprov lab status --json`` prints)."""
    hosts = []
    running = True
    for host in config.hosts:
        state = container_state(host.container)
        services = service_states(host.container) if state == "running" else {s: "absent" for s in SERVICES}
        running = running and state == "running"
        hosts.append({"name": host.name, "container": host.container, "hostname": host.hostname,
                      "address": host.ip, "state": state or "absent", "services": services,
                      "endpoints": config.endpoints(host)})
    have_secrets = (config.secrets_dir / ADMIN_SECRET).is_file()
    accounts = []
    for account in config.accounts:
        secret = config.secrets_dir / f"account_{account.employee_id}"
        accounts.append({"address": account.address,
                         "password": secret.read_text().split()[0] if secret.is_file() else None})
    ldap_port = config.endpoints().get("ldap", "127.0.0.1:636").rsplit(":", 1)[1]
    return {
        "running": running,
        "endpoints": config.endpoints(),
        "domain": config.domain,
        "accounts": accounts,
        "ldap": {
            "url": f"ldaps://127.0.0.1:{ldap_port}",
            "base_dn": config.base_dn,
            "bind_dn": f"cn=admin,{config.base_dn}",
            "bind_password": config.secret(ADMIN_SECRET) if have_secrets else None,
        },
        "ca_cert": str(config.ca_cert),
        "state_dir": str(config.state),
        "hosts": hosts,
    }


def write_status_file(config: LabConfig, doc: dict[str, Any]) -> Path:
    """Keep a copy of the status (it holds secrets: 0600) for other tools."""
    path = config.state / "lab.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=2)
    return path


def tls_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class SmokeResult:
    sender: str
    recipient: str
    token: str
    submit_seconds: float
    delivery_seconds: float
    #: The lab host whose published submission and IMAP ports carried the test.
    host: str = ""


def smoke_all(config: LabConfig, *, timeout: float = 60.0) -> list[SmokeResult]:
    """:func:`smoke` through every host of the lab, in inventory order (each MTA in turn)."""
    return [smoke(config, host=host, timeout=timeout) for host in config.hosts]


def smoke(config: LabConfig, *, host: LabHost | None = None, timeout: float = 60.0) -> SmokeResult:
    """Authenticated submission on 587 from one demo account, IMAP fetch by another,
    through ``host``'s published ports (default: the lab's first host)."""
    if len(config.accounts) < 2:
        raise ConfigError("the lab needs at least two demo accounts for the smoke test")
    sender, recipient = config.accounts[0], config.accounts[1]
    through = host or config.hosts[0]
    endpoints = config.endpoints(through)
    if "submission" not in endpoints or "imaps" not in endpoints:
        raise ConfigError(f"lab host {through.name} publishes no submission or imaps port")
    context = tls_context(config.ca_cert)
    token = uuid.uuid4().hex
    message = EmailMessage()
    message["From"] = sender.address
    message["To"] = recipient.address
    message["Subject"] = f"qnprov smoke {token}"
    message["Message-ID"] = f"<{token}@{config.domain}>"
    message.set_content(f"Smoke test {token} through {through.hostname}: submission on 587, "
                        "delivery over LMTP, IMAP fetch.\n")
    address, port = endpoints["submission"].rsplit(":", 1)
    started = time.monotonic()
    try:
        with smtplib.SMTP(address, int(port), timeout=30) as smtp:
            smtp.ehlo("smoke.qnprov.test")
            smtp.starttls(context=context)
            smtp.ehlo("smoke.qnprov.test")
            smtp.login(sender.address, config.secret(f"account_{sender.employee_id}"))
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise ExternalError(f"smoke: submission as {sender.address} on {through.name} ({address}:{port}) "
                            f"failed: {exc}") from exc
    submitted = time.monotonic()
    address, port = endpoints["imaps"].rsplit(":", 1)
    deadline = submitted + timeout
    last_error = "not delivered yet"
    while time.monotonic() < deadline:
        try:
            with imaplib.IMAP4_SSL(address, int(port), ssl_context=context, timeout=30) as imap:
                imap.login(recipient.address, config.secret(f"account_{recipient.employee_id}"))
                imap.select("INBOX", readonly=True)
                typ, data = imap.search(None, "HEADER", "Message-ID", f"<{token}@{config.domain}>")
                if typ == "OK" and data and data[0].split():
                    return SmokeResult(sender.address, recipient.address, token, submitted - started,
                                       time.monotonic() - submitted, through.name)
        except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise ExternalError(f"smoke: {recipient.address} did not receive {token} within {timeout:.0f}s "
                        f"over IMAP on {through.name} ({last_error})")
