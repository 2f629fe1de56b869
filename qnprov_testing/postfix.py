"""A throwaway, real Postfix on loopback for tests and benchmarks.

It uses the host's Postfix binaries with a private config directory, queue
and log (``postfix -c DIR start-fg``), listens on 127.0.0.1 only, relays
everything to an ``smtp-sink`` next hop on another loopback port, and can
point ``smtpd_milters`` at the qnprov milter on a unix socket. Nothing here
touches the host's own /etc/postfix or port 25.

Needs root (Postfix drops to ``mail_owner``) and the Debian ``postfix``
package's binaries.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qnprov.errors import ExternalError

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin") or "/usr/sbin/postfix"
SMTP_SINK = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "/usr/sbin/smtp-source"
#: Lines smtp-sink puts in front of each dumped message (see smtp-sink(1)).
_SINK_PREAMBLE = re.compile(rb"^X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args): ")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ExternalError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def wait_for_socket(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(path))
                return
        time.sleep(0.05)
    raise ExternalError(f"milter socket {path} not ready after {timeout:g}s")


def make_workdir(prefix: str = "qnprov-pf-") -> Path:
    """A world-traversable directory (Postfix's unprivileged daemons must reach the milter socket)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@dataclass
class SinkMessage:
    path: Path
    mail_from: str
    rcpts: list[str]
    content: bytes

    def header_lines(self) -> list[bytes]:
        head = self.content.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in self.content else b""
        return head.split(b"\r\n")


def parse_sink_dump(path: Path) -> SinkMessage:
    raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    lines = raw.split(b"\r\n")
    mail_from, rcpts = "", []
    index = 0
    while index < len(lines) and _SINK_PREAMBLE.match(lines[index]):
        name, _, value = lines[index].partition(b": ")
        if name == b"X-Mail-Args":
            mail_from = value.decode().split()[0].removeprefix("FROM:").strip("<>")
        elif name == b"X-Rcpt-Args":
            rcpts.append(value.decode().split()[0].removeprefix("TO:").strip("<>"))
        index += 1
    content = b"\r\n".join(lines[index:])
    # smtp-sink ends every dump with one extra empty line of its own.
    content = content.removesuffix(b"\r\n")
    return SinkMessage(path, mail_from, rcpts, content)


class SmtpSink:
    """``smtp-sink`` on a loopback port, dumping each message to its own file."""

    def __init__(self, workdir: Path, *, port: int | None = None, dump: bool = True) -> None:
        self.port = port or free_port()
        self.dump_dir = workdir / "sink"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dump_dir, "postfix")
        self.dump = dump
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        argv = [SMTP_SINK, "-u", "postfix", "-c"]
        if self.dump:
            argv += ["-d", f"{self.dump_dir}/msg."]
        argv += [f"127.0.0.1:{self.port}", "256"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port)
        return self

    def messages(self) -> list[SinkMessage]:
        return [parse_sink_dump(p) for p in sorted(self.dump_dir.glob("msg.*"), key=lambda p: p.stat().st_mtime)]

    def wait_messages(self, count: int, timeout: float = 30.0) -> list[SinkMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                # smtp-sink writes each dump while the transaction runs: wait (bounded)
                # until no file has grown for 0.3 s.
                while time.monotonic() < deadline:
                    sizes = {m.path: m.path.stat().st_size for m in found}
                    time.sleep(0.3)
                    found = self.messages()
                    if {m.path: m.path.stat().st_size for m in found} == sizes:
                        break
                return found
            time.sleep(0.05)
        raise ExternalError(f"smtp-sink received {len(self.messages())} of {count} messages in {timeout:g}s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


@dataclass
class PostfixInstance:
    """A private Postfix: ``smtp_port`` on 127.0.0.1 relays to ``relay_port``."""

    workdir: Path
    relay_port: int
    milter_socket: Path | None = None
    milter_default_action: str = "tempfail"
    smtp_port: int = field(default_factory=free_port)
    extra_main: dict[str, str] = field(default_factory=dict)
    extra_master: list[str] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def config_dir(self) -> Path:
        return self.workdir / "etc"

    @property
    def maillog(self) -> Path:
        return self.workdir / "maillog"

    def main_cf(self) -> dict[str, str]:
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.workdir / "spool"),
            "data_directory": str(self.workdir / "data"),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mail1.quangninh.test",
            "mydomain": "quangninh.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.workdir),
            "default_destination_concurrency_limit": "50",
            "smtp_destination_concurrency_limit": "50",
            "default_process_limit": "200",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "in_flow_delay": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "message_size_limit": str(64 * 1024 * 1024),
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
        }
        if self.milter_socket is not None:
            main.update(
                {
                    "smtpd_milters": f"unix:{self.milter_socket}",
                    "non_smtpd_milters": f"unix:{self.milter_socket}",
                    "milter_default_action": self.milter_default_action,
                    "milter_protocol": "6",
                    "milter_connect_timeout": "5s",
                    "milter_content_timeout": "60s",
                    "milter_command_timeout": "30s",
                }
            )
        main.update(self.extra_main)
        return main

    def master_cf(self) -> str:
        services = [
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
            "pickup    unix n - n 60 1 pickup",
            "cleanup   unix n - n - 0 cleanup",
            "qmgr      unix n - n 300 1 qmgr",
            "tlsmgr    unix - - n 1000? 1 tlsmgr",
            "rewrite   unix - - n - - trivial-rewrite",
            "bounce    unix - - n - 0 bounce",
            "defer     unix - - n - 0 bounce",
            "trace     unix - - n - 0 bounce",
            "verify    unix - - n - 1 verify",
            "flush     unix n - n 1000? 0 flush",
            "proxymap  unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp      unix - - n - - smtp",
            "relay     unix - - n - - smtp",
            "showq     unix n - n - - showq",
            "error     unix - - n - - error",
            "retry     unix - - n - - error",
            "discard   unix - - n - - discard",
            "anvil     unix - - n - 1 anvil",
            "scache    unix - - n - 1 scache",
            "postlog   unix-dgram n - n - 1 postlogd",
            *self.extra_master,
        ]
        return "\n".join(services) + "\n"

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for name in ("spool", "data"):
            (self.workdir / name).mkdir(exist_ok=True)
        shutil.chown(self.workdir / "data", "postfix")
        main = "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(main, encoding="utf-8")
        (self.config_dir / "master.cf").write_text(self.master_cf(), encoding="utf-8")
        for extra in ("dynamicmaps.cf",):
            source = Path("/etc/postfix") / extra
            if source.exists():
                shutil.copy(source, self.config_dir / extra)
        self.maillog.touch()
        shutil.chown(self.maillog, "postfix")

    def postconf(self, *args: str) -> str:
        result = subprocess.run(["postconf", "-c", str(self.config_dir), *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise ExternalError(f"postconf {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start(self) -> PostfixInstance:
        self.write_config()
        # postfix(1) logs its own fatal errors to syslog only unless stderr is a tty; "script"
        # gives it one, so a broken config fails with Postfix's own message.
        check = subprocess.run(["script", "-qec", f"{POSTFIX} -c {self.config_dir} check", "/dev/null"],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise ExternalError(f"postfix check failed: {check.stdout.strip()[-1000:]}")
        self._process = subprocess.Popen(
            [POSTFIX, "-c", str(self.config_dir), "start-fg"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        try:
            wait_for_port(self.smtp_port, timeout=30)
        except ExternalError:
            self.stop()
            raise ExternalError(f"postfix did not start: {self.log_text()[-2000:]}") from None
        return self

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.config_dir), "-f"], capture_output=True, check=False)

    def queue(self) -> str:
        return subprocess.run(["postqueue", "-c", str(self.config_dir), "-j"], capture_output=True, text=True,
                              check=False).stdout

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, check=False)
        if self._process is not None:
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
            self._process = None


class MilterProcess:
    """``qnprov milter`` as a real subprocess on a unix socket."""

    def __init__(self, workdir: Path, *, args: Sequence[str] = (), socket_path: Path | None = None) -> None:
        self.socket_path = socket_path or (workdir / "milter" / "milter.sock")
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.chmod(0o755)
        self.args = list(args)
        self.log = workdir / "milter.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 60.0) -> MilterProcess:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = [sys.executable, "-m", "qnprov.policy.milter_cli", "milter", "--socket", f"unix:{self.socket_path}",
                "--socket-umask", "000", *self.args]
        log_handle = self.log.open("ab")
        self._process = subprocess.Popen(argv, stdout=log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        log_handle.close()
        try:
            wait_for_socket(self.socket_path, timeout)
        except ExternalError:
            self.stop()
            raise ExternalError(f"milter did not start: {self.log.read_text(errors='replace')[-2000:]}") from None
        return self

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """Kill the milter and its workers at once (a crash, as far as Postfix can tell)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)  # stray workers


@contextlib.contextmanager
def postfix_with_milter(
    *, milter_args: Sequence[str] | None = None, with_milter: bool = True, keep: bool = False,
    extra_main: dict[str, str] | None = None, extra_master: list[str] | None = None, dump: bool = True,
) -> Iterator[tuple[PostfixInstance, SmtpSink, MilterProcess | None]]:
    """smtp client → Postfix (→ milter) → smtp-sink, torn down afterwards."""
    workdir = make_workdir()
    sink = SmtpSink(workdir, dump=dump).start()
    milter = MilterProcess(workdir, args=milter_args or ()).start() if with_milter else None
    postfix = PostfixInstance(
        workdir, relay_port=sink.port, milter_socket=milter.socket_path if milter else None,
        extra_main=extra_main or {}, extra_master=extra_master or [],
    )
    try:
        postfix.start()
        yield postfix, sink, milter
    finally:
        postfix.stop()
        if milter:
            milter.stop()
        sink.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
