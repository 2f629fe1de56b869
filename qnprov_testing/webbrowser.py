"""A real browser for the lab's webmail: Playwright driving Debian's Chromium.

* The browser is ``/usr/bin/chromium`` (Debian's package, ``scripts/bootstrap.sh``),
  started with Playwright's ``executable_path``; Playwright's own browser downloads are
  never used.
* Certificates: the browser process gets a private ``HOME`` whose NSS database
  (``$HOME/.pki/nssdb``, made with ``certutil`` from libnss3-tools) holds the lab CA as
  its only added trust anchor. No ``ignore_https_errors``, no ``--ignore-certificate-errors``:
  a page whose certificate does not chain to the lab CA (or does not name the host) fails
  to load, as :func:`tests` check with a browser that lacks the CA.
* Names: no DNS. Chromium's ``--host-resolver-rules`` maps the official name *and port*
  to the lab's published loopback port (``MAP mail1.quangninh.test:443 127.0.0.1:14443``),
  so the page's URL is ``https://mail1.quangninh.test/`` exactly as an official types it,
  with the origin, SNI and Host the server expects; every other name resolves to nothing
  (``MAP * ~NOTFOUND``), so the browser cannot reach anything but the lab.

:class:`LabBrowser` is a context manager; :meth:`LabBrowser.context` opens a fresh
browser context (its own cookies: a second person at another computer) that records
console errors and uncaught page exceptions in :attr:`Watched.errors`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 "--disable-default-apps", "--disable-features=Translate,OptimizationHints,MediaRouter")
CA_NICKNAME = "qnprov-lab-ca"


def resolver_rules(names: dict[str, tuple[str, int, int]]) -> str:
    """Chromium's ``--host-resolver-rules``: each ``name -> (address, published port, url port)``
    mapped, every other name unresolvable."""
    rules = [f"MAP {name}:{url_port} {address}:{port}" for name, (address, port, url_port) in names.items()]
    return ", ".join([*rules, "MAP * ~NOTFOUND"])


def make_nss_home(home: Path, ca_files: list[Path]) -> Path:
    """A private HOME whose NSS database trusts exactly ``ca_files`` (besides Chromium's own roots)."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True,
                   capture_output=True, timeout=60)
    for index, ca in enumerate(ca_files):
        subprocess.run(["certutil", "-A", "-d", f"sql:{nssdb}", "-n", f"{CA_NICKNAME}-{index}", "-t", "C,,",
                        "-i", str(ca)], check=True, capture_output=True, timeout=60)
    listed = subprocess.run(["certutil", "-L", "-d", f"sql:{nssdb}"], check=True, capture_output=True,
                            text=True, timeout=60).stdout
    if sum(CA_NICKNAME in line for line in listed.splitlines()) != len(ca_files):
        raise RuntimeError(f"the NSS db does not list the lab CA: {listed}")
    return home


def goto(page: Any, url: str, attempts: int = 3) -> Any:
    """``page.goto`` that retries a load Chromium aborted with ``ERR_NETWORK_CHANGED``.

    Chromium cancels requests in flight whenever a network interface of the machine
    appears or goes (its NetworkChangeNotifier), and on a shared test machine other
    containers' veth interfaces come and go all the time; seen once in the benchmark.
    Any other error is raised at once."""
    for attempt in range(attempts):
        try:
            return page.goto(url)
        except Exception as error:
            if "ERR_NETWORK_CHANGED" not in str(error) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class Watched:
    """A browser context and what its pages reported."""

    context: Any
    errors: list[str] = field(default_factory=list)

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("console", lambda message: self.errors.append(
            f"console: {message.text} ({message.location.get('url', '?')})") if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        return page

    def close(self) -> None:
        self.context.close()


class LabBrowser:
    """Headless Chromium that trusts the lab CA and resolves only the lab's names."""

    def __init__(self, names: dict[str, tuple[str, int, int]], ca_files: list[Path], *,
                 locale: str = "vi-VN", headless: bool = True) -> None:
        self.names = names
        self.ca_files = ca_files
        self.locale = locale
        self.headless = headless
        self._home: Path | None = None
        self._playwright: Any = None
        self.browser: Any = None

    def __enter__(self) -> LabBrowser:
        from playwright.sync_api import sync_playwright

        if not os.access(CHROMIUM, os.X_OK):
            raise RuntimeError(f"{CHROMIUM} is missing: run scripts/bootstrap.sh (Debian's chromium)")
        self._home = make_nss_home(Path(tempfile.mkdtemp(prefix="qnprov-browser-home-")), self.ca_files)
        env = {"HOME": str(self._home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "LANG": "C.UTF-8", "TZ": "Asia/Ho_Chi_Minh"}
        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, headless=self.headless, env=env,
                args=[*CHROMIUM_ARGS, f"--host-resolver-rules={resolver_rules(self.names)}"])
        except Exception:
            self._playwright.stop()
            raise
        return self

    def context(self, **options: Any) -> Watched:
        assert self.browser is not None, "use LabBrowser as a context manager"
        options.setdefault("locale", self.locale)
        options.setdefault("timezone_id", "Asia/Ho_Chi_Minh")
        if options.get("ignore_https_errors"):
            raise ValueError("the lab browser never ignores certificate errors")
        return Watched(self.browser.new_context(**options))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            if self._playwright is not None:
                self._playwright.stop()
            if self._home is not None:
                shutil.rmtree(self._home, ignore_errors=True)
