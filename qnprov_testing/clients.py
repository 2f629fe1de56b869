"""Real third-party mail clients (isync's mbsync, msmtp, sieve-connect) against a lab.

Clients check the certificate against the name they were given, so each runs in a private
mount namespace whose /etc/hosts maps the lab's host names to 127.0.0.1 (the published
ports); the machine's own /etc/hosts is untouched and no name goes to DNS. Only the lab
CA is trusted, and no client is told to skip a check. Passwords reach the clients through
a 0600 file or a file descriptor, never through argv.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Run argv with the hosts file at $0 bind-mounted over /etc/hosts.
_WITH_HOSTS = 'mount --bind "$0" /etc/hosts && exec "$@"'


def run_with_hosts(argv: list[str], names: list[str], workdir: Path, *, timeout: float = 120,
                   stdin: str | None = None, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    hosts = workdir / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {name}\n" for name in names))
    return subprocess.run(["unshare", "-m", "sh", "-c", _WITH_HOSTS, str(hosts), *argv], capture_output=True,
                          text=True, timeout=timeout, input=stdin, pass_fds=pass_fds, check=False)


def secret_file(workdir: Path, name: str, secret: str) -> Path:
    path = workdir / name
    path.touch(mode=0o600)
    path.write_text(secret)
    return path


def mbsync_pull_inbox(workdir: Path, *, server: str, port: int, user: str, password: str,
                      ca: Path, ssl_type: str = "IMAPS") -> tuple[subprocess.CompletedProcess[str], Path]:
    """``mbsync`` pulls INBOX into a Maildir; returns the run and the Maildir.

    ``ssl_type`` is mbsync's SSLType: ``IMAPS`` (implicit TLS) or ``STARTTLS``; never ``None``.
    """
    if ssl_type not in ("IMAPS", "STARTTLS"):
        raise ValueError(f"SSLType {ssl_type!r}: only IMAPS or STARTTLS")
    maildir = workdir / "maildir"
    maildir.mkdir(exist_ok=True)
    pw = secret_file(workdir, "imap-password", password)
    rc = workdir / "mbsyncrc"
    rc.write_text(f"""IMAPAccount lab
Host {server}
Port {port}
User {user}
PassCmd "cat {pw}"
SSLType {ssl_type}
CertificateFile {ca}
SystemCertificates no

IMAPStore remote
Account lab

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX

Channel lab
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
""")
    proc = run_with_hosts(["mbsync", "-c", str(rc), "lab"], [server], workdir)
    return proc, maildir / "INBOX"


def msmtp_send(workdir: Path, message: str, *, server: str, port: int, user: str, password: str,
               ca: Path, recipient: str, starttls: bool = True) -> subprocess.CompletedProcess[str]:
    """``msmtp`` submits ``message`` over TLS (STARTTLS, or implicit TLS with ``starttls=False``)
    and AUTH as ``user``."""
    pw = secret_file(workdir, "smtp-password", password)
    rc = workdir / "msmtprc"
    rc.write_text(f"""account lab
host {server}
port {port}
tls on
tls_starttls {'on' if starttls else 'off'}
tls_trust_file {ca}
auth on
user {user}
passwordeval "cat {pw}"
from {user}
""")
    rc.chmod(0o600)
    return run_with_hosts(["msmtp", "-C", str(rc), "-a", "lab", recipient], [server], workdir, stdin=message)


def sieve_connect(workdir: Path, *args: str, server: str, port: int, user: str, password: str,
                  ca: Path) -> subprocess.CompletedProcess[str]:
    """``sieve-connect`` with ``args`` (an upload, ``--list``, ...), the password on a pipe."""
    read, write = os.pipe()
    try:
        os.write(write, password.encode() + b"\n")
        os.close(write)
        return run_with_hosts(["sieve-connect", "--server", server, "--port", str(port), "--user", user,
                               "--passwordfd", str(read), "--tlscafile", str(ca), *args],
                              [server], workdir, pass_fds=(read,))
    finally:
        os.close(read)
