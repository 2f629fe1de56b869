"""qnprov's own command line and the lab's IMAP side, as the tests drive them.

* :func:`run_qnprov`: ``python -m qnprov ARGS`` from the project root, with a state directory
  of the test's own when given (the testbed tests' private labs);
* :func:`qnprov_json`: the same with ``--json``; the document, or a test failure naming the
  command when it printed none;
* :func:`fetch_and_delete`: poll an INBOX over IMAPS until a message with the subject arrives,
  return its raw bytes and expunge it (the lab's mail-flow tests).
"""

from __future__ import annotations

import imaplib
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qnprov import paths


def run_qnprov(*args: str, state: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QNPROV_STATE_DIR": str(state)} if state is not None else None
    return subprocess.run([sys.executable, "-m", "qnprov", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=paths.PROJECT_ROOT, env=env, check=False)


def qnprov_json(*argv: str, timeout: float = 300, empty_ok: bool = False
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``qnprov ARGV --json``; with ``empty_ok`` an empty output is ``{}`` (a refusal before any host)."""
    proc = run_qnprov(*argv, "--json", timeout=timeout)
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() or not empty_ok else {}
    except json.JSONDecodeError:
        pytest.fail(f"qnprov {' '.join(argv)} printed no JSON (rc {proc.returncode}): {proc.stderr[-2000:]}",
                    pytrace=False)
    return proc, doc


def fetch_and_delete(host: str, port: int, context: ssl.SSLContext, user: str, password: str, subject: str, *,
                     timeout: float) -> bytes:
    """Poll the INBOX until the message arrives; return it raw and delete it."""
    deadline = time.monotonic() + timeout
    with imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout) as imap:
        imap.login(user, password)
        while time.monotonic() < deadline:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", f'"{subject}"')
            ids = data[0].split()
            if ids:
                _, fetched = imap.fetch(ids[0], "(BODY.PEEK[])")
                part = fetched[0]
                assert isinstance(part, tuple), fetched
                imap.store(ids[0], "+FLAGS", "\\Deleted")
                imap.expunge()
                return part[1]
            time.sleep(0.5)
    pytest.fail(f"{subject!r} did not reach {user} within {timeout:.0f}s", pytrace=False)
