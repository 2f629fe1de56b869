"""The webmail tests' browser (qnprov_testing/webbrowser.py), against a throwaway HTTPS server on loopback.

Real Chromium (Debian's, from scripts/bootstrap.sh) driven by Playwright: the trust it
has comes from the CA put in its private NSS database and nothing else it is told; the
official name and port are mapped to the loopback server; every other name is unresolvable.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qnprov_testing.slapd import write_test_pki
from qnprov_testing.webbrowser import LabBrowser, goto, resolver_rules

NAME = "mail1.quangninh.test"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"<html><body><h1>{self.headers['Host']}</h1></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    directory = tmp_path_factory.mktemp("pki")
    ca, cert, key = write_test_pki(directory, NAME)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca
    server.shutdown()
    server.server_close()


def test_resolver_rules_map_name_and_port_and_nothing_else() -> None:
    assert resolver_rules({NAME: ("127.0.0.1", 14443, 443)}) == \
        "MAP mail1.quangninh.test:443 127.0.0.1:14443, MAP * ~NOTFOUND"


def test_the_browser_trusts_the_given_ca_reaches_only_the_mapped_name_and_never_ignores_errors(
        https_server: tuple[int, Path]) -> None:
    port, ca = https_server
    names = {NAME: ("127.0.0.1", port, 443), "other.quangninh.test": ("127.0.0.1", port, 443)}
    with LabBrowser(names, [ca]) as browser:
        watched = browser.context()
        page = watched.page()
        response = page.goto(f"https://{NAME}/")
        # Reached through the mapped port, with the official name (no port) as Host.
        assert response is not None and response.status == 200
        assert page.inner_text("h1") == NAME
        # Same server and CA, but the certificate does not name this host: refused.
        with pytest.raises(Exception, match="ERR_CERT_COMMON_NAME_INVALID"):
            page.goto("https://other.quangninh.test/")
        with pytest.raises(Exception, match="ERR_NAME_NOT_RESOLVED"):
            page.goto("https://example.org/")
        assert watched.errors == []
        watched.close()
        with pytest.raises(ValueError):
            browser.context(ignore_https_errors=True)
    # Without the CA in its NSS database the same page is refused.
    with LabBrowser(names, []) as untrusting:
        watched = untrusting.context()
        with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
            watched.page().goto(f"https://{NAME}/")
        watched.close()


class _FlakyPage:
    def __init__(self, failures: list[str]) -> None:
        self.failures, self.calls = failures, 0

    def goto(self, url: str) -> str:
        self.calls += 1
        if self.failures:
            raise RuntimeError(f"Page.goto: net::{self.failures.pop(0)} at {url}")
        return url


def test_goto_retries_only_a_load_aborted_by_a_network_change() -> None:
    page = _FlakyPage(["ERR_NETWORK_CHANGED", "ERR_NETWORK_CHANGED"])
    assert goto(page, "https://x/") == "https://x/" and page.calls == 3
    page = _FlakyPage(["ERR_NETWORK_CHANGED"] * 3)
    with pytest.raises(RuntimeError, match="ERR_NETWORK_CHANGED"):
        goto(page, "https://x/")
    page = _FlakyPage(["ERR_CERT_AUTHORITY_INVALID"])
    with pytest.raises(RuntimeError, match="ERR_CERT_AUTHORITY_INVALID"):
        goto(page, "https://x/")
    assert page.calls == 1
