"""Client autoconfiguration (roles/webmail, issue 14) on the lab, as real clients meet it.

* The Thunderbird autoconfig XML is fetched from https://autoconfig.<domain>/mail/config-v1.1.xml
  and from /.well-known/autoconfig/ of the official name, over the lab's published HTTPS
  port. The client trusts the lab CA and nothing else, sends the asked-for name as SNI and
  Host, and checks the certificate against that name.
* mbsync and msmtp (qnprov_testing.clients) are then configured from the values of that XML
  only: host name, port, socket type and user name. The one thing a test on this machine
  must add is the port: the XML names the container's ports (993, 587, 465), which the lab
  publishes on other loopback ports; ``podman port`` translates each, and the clients' own
  /etc/hosts (a private mount namespace) maps the XML's host name to 127.0.0.1. The host
  name the clients are given, and check the certificate against, is the XML's.
* Outlook's Autodiscover (POX) is POSTed as Outlook does, and answered.
* Bad input: the autoconfig XML is the same document whatever the address; Autodiscover
  answers an unknown account of a served domain exactly as a real one (but for the echoed
  login name), so nothing tells whether an account exists, and refuses a malformed or foreign
  address with a defined one-line 400; an oversized body gets 413 from nginx.
* The Apple .mobileconfig profile comes only through a logged-in Roundcube session (the
  qnprov_mobileconfig plugin): without one, or after logout, the answer is Roundcube's login
  page; with one, a well-formed profile (plistlib) of that user's account and no password.

The XML is parsed with the standard library's ElementTree (expat, which refuses entity
expansion bombs); it comes from the lab's own nginx.
"""

from __future__ import annotations

import http.client
import json
import plistlib
import shlex
import socket
import ssl
import subprocess
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
import yaml
from labenv import require_env

from qnprov import paths
from qnprov_testing import clients, roundcube

OFFICIAL_NAME = "mail1.quangninh.test"
DELIVERY_DEADLINE = 90.0
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# Webmail's bound on an Autodiscover request (webmail_autodiscover_max_request's default).
AUTODISCOVER_MAX = 8192


def _domain() -> str:
    return require_env("QNPROV_TEST_DOMAIN")


def _account() -> dict[str, str]:
    return json.loads(require_env("QNPROV_TEST_ACCOUNTS"))[0]


def _https_port() -> int:
    return int(json.loads(require_env("QNPROV_TEST_ENDPOINTS"))["https"].rpartition(":")[2])


def _published(container_port: int) -> int:
    """The loopback port the lab publishes ``container_port`` of its host on (podman's own answer)."""
    proc = subprocess.run(["podman", "port", require_env("QNPROV_TEST_HOST"), f"{container_port}/tcp"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and proc.stdout.strip(), \
        f"the lab publishes no port for the XML's port {container_port}: {proc.stderr.strip()}"
    host, _, port = proc.stdout.splitlines()[0].rpartition(":")
    assert host == "127.0.0.1", f"port {container_port} is published on {host}, not loopback"
    return int(port)


def _context() -> ssl.SSLContext:
    # Only the lab CA (no system store); PROTOCOL_TLS_CLIENT checks the host name.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=require_env("QNPROV_TEST_CA"))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


class _Named(http.client.HTTPSConnection):
    """HTTPS to the published loopback port, with ``name`` as SNI and as the name checked."""

    def __init__(self, name: str) -> None:
        super().__init__("127.0.0.1", _https_port(), timeout=60, context=_context())
        self.name = name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.name)  # type: ignore[attr-defined]


def _https(name: str, method: str, path: str, body: bytes | None = None,
           headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = _Named(name)
    try:
        conn.request(method, path, body=body, headers={"Host": name, "User-Agent": "qnprov-autoconfig-test",
                                                       **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _autoconfig(name: str, path: str, address: str | None) -> tuple[int, http.client.HTTPMessage, bytes]:
    query = "?" + urllib.parse.urlencode({"emailaddress": address}) if address is not None else ""
    return _https(name, "GET", path + query)


def _servers(document: bytes) -> tuple[dict[str, str], list[dict[str, str]], list[str]]:
    """(the IMAP incoming server, the SMTP outgoing servers in order, the domains) of a clientConfig."""
    root = ET.fromstring(document)  # noqa: S314 - the lab's own nginx; expat refuses entity bombs
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None
    fields = ("hostname", "port", "socketType", "username", "authentication")

    def server(element: ET.Element) -> dict[str, str]:
        values = {f: (element.findtext(f) or "").strip() for f in fields}
        assert all(values.values()), f"{element.tag} lacks one of {fields}: {values}"
        return values

    incoming = [server(e) for e in provider.findall("incomingServer")]
    assert [e.get("type") for e in provider.findall("incomingServer")] == ["imap"], \
        "only IMAP is offered for incoming mail (no POP3)"
    outgoing = [server(e) for e in provider.findall("outgoingServer")]
    assert {e.get("type") for e in provider.findall("outgoingServer")} == {"smtp"}
    return incoming[0], outgoing, [(d.text or "").strip() for d in provider.findall("domain")]


def _expand(template: str, address: str) -> str:
    """Thunderbird's placeholders in a clientConfig value."""
    local, _, domain = address.partition("@")
    return template.replace("%EMAILADDRESS%", address).replace("%EMAILLOCALPART%", local) \
        .replace("%EMAILDOMAIN%", domain)


def test_autoconfig_xml_is_served_on_both_names_with_only_the_lab_ca():
    address = _account()["address"]
    answers = {}
    for name, path in ((f"autoconfig.{_domain()}", "/mail/config-v1.1.xml"),
                       (f"autoconfig.{_domain()}", "/.well-known/autoconfig/mail/config-v1.1.xml"),
                       (OFFICIAL_NAME, "/.well-known/autoconfig/mail/config-v1.1.xml")):
        status, headers, body = _autoconfig(name, path, address)
        assert status == 200, (name, path, status, body[:200])
        assert headers["Content-Type"].startswith("application/xml"), headers["Content-Type"]
        assert "nginx/" not in (headers.get("Server") or ""), "nginx discloses its version"
        answers[(name, path)] = body
    assert len(set(answers.values())) == 1, "the names serve different autoconfig documents"

    incoming, outgoing, domains = _servers(next(iter(answers.values())))
    assert _domain() in domains
    assert incoming == {"hostname": OFFICIAL_NAME, "port": "993", "socketType": "SSL",
                        "username": "%EMAILADDRESS%", "authentication": "password-cleartext"}
    assert [(s["port"], s["socketType"]) for s in outgoing] == [("587", "STARTTLS"), ("465", "SSL")]
    assert all(s["hostname"] == OFFICIAL_NAME and s["username"] == "%EMAILADDRESS%"
               and s["authentication"] == "password-cleartext" for s in outgoing)
    # no plain-text socket anywhere: cleartext passwords only ever inside TLS
    assert "plain" not in {incoming["socketType"], *(s["socketType"] for s in outgoing)}


def test_autoconfig_hostname_is_checked_against_the_certificate():
    # A name the certificate does not carry is refused by the client, so the check is real.
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _autoconfig("autoconfig.example.org", "/mail/config-v1.1.xml", None)


@pytest.mark.mailflow
def test_mbsync_and_msmtp_set_up_only_from_the_autoconfig_xml_send_and_sync(tmp_path: Path):
    account = _account()
    address, password = account["address"], account["password"]
    status, _, body = _autoconfig(f"autoconfig.{_domain()}", "/mail/config-v1.1.xml", address)
    assert status == 200
    incoming, outgoing, _ = _servers(body)
    ca = Path(require_env("QNPROV_TEST_CA"))

    # Send once through every outgoing server the XML offers, each as the XML says.
    tokens = []
    for server in outgoing:
        token = uuid.uuid4().hex
        tokens.append(token)
        msg = EmailMessage()
        msg["From"], msg["To"] = address, address
        msg["Subject"] = f"Cấu hình tự động {server['socketType']} {token}"
        msg["Date"], msg["Message-ID"] = format_datetime(datetime.now().astimezone()), make_msgid(domain=_domain())
        msg.set_content(f"Gửi bằng msmtp, cấu hình từ autoconfig ({server['port']}/{server['socketType']}). {token}\n")
        assert server["socketType"] in ("STARTTLS", "SSL")
        workdir = tmp_path / f"smtp-{server['port']}"
        workdir.mkdir()
        sent = clients.msmtp_send(workdir, msg.as_string(), server=server["hostname"],
                                  port=_published(int(server["port"])), user=_expand(server["username"], address),
                                  password=password, ca=ca, recipient=address,
                                  starttls=server["socketType"] == "STARTTLS")
        assert sent.returncode == 0, f"msmtp via {server['port']}/{server['socketType']}: {sent.stderr}"

    # Pull with mbsync, its SSLType from the XML's socketType (SSL: implicit TLS).
    ssl_type = {"SSL": "IMAPS", "STARTTLS": "STARTTLS"}[incoming["socketType"]]
    began, missing = time.monotonic(), set(tokens)
    while missing and time.monotonic() - began < DELIVERY_DEADLINE:
        pulled, inbox = clients.mbsync_pull_inbox(tmp_path, server=incoming["hostname"],
                                                  port=_published(int(incoming["port"])),
                                                  user=_expand(incoming["username"], address), password=password,
                                                  ca=ca, ssl_type=ssl_type)
        assert pulled.returncode == 0, pulled.stderr
        texts = [p.read_text(errors="replace") for d in ("new", "cur") for p in (inbox / d).glob("*")]
        missing = {t for t in tokens if not any(t in text for text in texts)}
        if missing:
            time.sleep(3)
    assert not missing, f"mbsync never pulled {len(missing)} of the {len(tokens)} messages msmtp sent"


def test_the_clients_check_the_certificate_name(tmp_path: Path):
    # The same clients, set up the same way but told a name the certificate lacks (mapped to
    # the same loopback port), refuse: the name check that the test above relies on is live.
    account = _account()
    ca = Path(require_env("QNPROV_TEST_CA"))
    wrong = "imap.example.org"
    pulled, _ = clients.mbsync_pull_inbox(tmp_path, server=wrong, port=_published(993), user=account["address"],
                                          password=account["password"], ca=ca, ssl_type="IMAPS")
    assert pulled.returncode != 0 and "certificate owner does not match hostname" in pulled.stderr, pulled.stderr
    sent = clients.msmtp_send(tmp_path, "Subject: x\n\nx\n", server=wrong, port=_published(465),
                              user=account["address"], password=account["password"], ca=ca,
                              recipient=account["address"], starttls=False)
    assert sent.returncode != 0 and "name in the certificate does not match" in sent.stderr, sent.stderr


def test_autoconfig_answer_does_not_depend_on_the_address():
    # The XML is one static document: a real account, an unknown one, a foreign or a
    # malformed address and none at all get byte-for-byte the same answer.
    name, path = f"autoconfig.{_domain()}", "/mail/config-v1.1.xml"
    real = _autoconfig(name, path, _account()["address"])
    assert real[0] == 200
    for address in (f"khong-ton-tai-{uuid.uuid4().hex[:8]}@{_domain()}", "someone@example.org",
                    "not an address <script>", "%EMAILADDRESS%", "a" * 2000, None):
        status, _, body = _autoconfig(name, path, address)
        assert (status, body) == (200, real[2]), f"emailaddress={address!r} changes the answer"


def _autodiscover_request(address: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{REQUEST_NS}">\n  <Request>\n'
            f"    <EMailAddress>{address}</EMailAddress>\n"
            f"    <AcceptableResponseSchema>{OUTLOOK_NS}</AcceptableResponseSchema>\n"
            "  </Request>\n</Autodiscover>\n").encode()


def _autodiscover(body: bytes, name: str | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    return _https(name or f"autodiscover.{_domain()}", "POST", "/autodiscover/autodiscover.xml", body,
                  {"Content-Type": "text/xml; charset=utf-8", **(headers or {})})


def _protocols(body: bytes) -> dict[str, dict[str, str]]:
    root = ET.fromstring(body)  # noqa: S314 - the lab's own PHP answer
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    assert account is not None
    assert account.findtext(f"{{{OUTLOOK_NS}}}AccountType") == "email"
    assert account.findtext(f"{{{OUTLOOK_NS}}}Action") == "settings"
    return {(p.findtext(f"{{{OUTLOOK_NS}}}Type") or ""): {c.tag.split("}")[1]: (c.text or "") for c in p}
            for p in account.findall(f"{{{OUTLOOK_NS}}}Protocol")}


def test_outlook_autodiscover_pox_answers_with_the_servers():
    address = _account()["address"]
    for name in (f"autodiscover.{_domain()}", OFFICIAL_NAME):
        status, headers, body = _autodiscover(_autodiscover_request(address), name)
        assert status == 200, (name, status, body[:300])
        assert headers["Content-Type"].startswith("application/xml")
        assert headers["Cache-Control"] == "no-store"
        assert "X-Powered-By" not in headers
        protocols = _protocols(body)
        assert set(protocols) == {"IMAP", "SMTP"}
        imap, smtp = protocols["IMAP"], protocols["SMTP"]
        assert (imap["Server"], imap["Port"], imap["SSL"], imap["Encryption"], imap["LoginName"], imap["SPA"]) == \
            (OFFICIAL_NAME, "993", "on", "SSL", address, "off")
        assert (smtp["Server"], smtp["Port"], smtp["SSL"], smtp["Encryption"], smtp["LoginName"],
                smtp["AuthRequired"]) == (OFFICIAL_NAME, "587", "on", "TLS", address, "on")


def test_autodiscover_gives_no_hint_whether_an_account_exists():
    real = _account()["address"]
    unknown = f"khong-ton-tai-{uuid.uuid4().hex[:8]}@{_domain()}"
    status_real, _, body_real = _autodiscover(_autodiscover_request(real))
    status_unknown, _, body_unknown = _autodiscover(_autodiscover_request(unknown))
    assert status_real == status_unknown == 200
    # the same answer but for the echoed login name
    assert body_unknown.replace(unknown.encode(), b"ADDRESS") == body_real.replace(real.encode(), b"ADDRESS")


@pytest.mark.parametrize(("body", "reason"), [
    (_autodiscover_request("not-an-address"), b"EMailAddress is not a mail address"),
    (_autodiscover_request("x@y@" + "quangninh.test"), b"EMailAddress is not a mail address"),
    (_autodiscover_request("someone@example.org"), b"EMailAddress is not of a domain served here"),
    (b"<Autodiscover><Request><EMailAddress>", b"request is not well-formed XML"),
    (b"", b"empty request"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', b"DTDs are not accepted"),
], ids=["not-an-address", "two-ats", "foreign-domain", "truncated", "empty", "dtd"])
def test_autodiscover_refuses_bad_requests_with_a_defined_answer(body: bytes, reason: bytes):
    status, headers, answer = _autodiscover(body)
    assert status == 400, (status, answer[:200])
    assert headers["Content-Type"].startswith("text/plain")
    assert answer == b"autodiscover: " + reason + b"\n"


def test_autodiscover_refuses_an_oversized_body():
    # Outlook's real request is a few hundred bytes; nginx stops larger bodies at the bound
    # (declared length, or chunked without one) before PHP reads them.
    padding = b"<!-- " + b"x" * AUTODISCOVER_MAX + b" -->"
    big = _autodiscover_request(_account()["address"]).replace(b"<Request>", b"<Request>" + padding)
    status, _, _ = _autodiscover(big)
    assert status == 413

    conn = _Named(f"autodiscover.{_domain()}")
    try:
        conn.request("POST", "/autodiscover/autodiscover.xml", body=iter([big[:4096], big[4096:]]),
                     headers={"Host": f"autodiscover.{_domain()}", "Content-Type": "text/xml"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        response.read()
    finally:
        conn.close()

    # a GET is not an Autodiscover request
    status, _, answer = _https(f"autodiscover.{_domain()}", "GET", "/autodiscover/autodiscover.xml")
    assert (status, answer) == (400, b"autodiscover: POST an Outlook Autodiscover request\n")


def test_autoconfig_names_serve_nothing_else():
    for path in ("/", "/index.php", "/?_task=login", "/autodiscover/../config-v1.1.xml", "/config-v1.1.xml"):
        status, _, _ = _https(f"autoconfig.{_domain()}", "GET", path)
        assert status == 404, (path, status)


# --- the Apple .mobileconfig, only through a Roundcube session ------------------------------

MOBILECONFIG = "/?_task=settings&_action=plugin.qnprov_mobileconfig"


class _Session:
    """Roundcube's login as a browser does it: session cookie, request token, form POST."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def get(self, path: str, form: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        headers = {"Cookie": roundcube.cookie_header(self.cookies)} if self.cookies else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        status, answer, text = _https(OFFICIAL_NAME, "POST" if form is not None else "GET", path, body, headers)
        roundcube.store_cookies(self.cookies, answer.get_all("Set-Cookie"))
        return status, answer, text

    def token(self, page: bytes) -> str:
        found = roundcube.request_token(page)
        assert found, "no Roundcube request token in the page"
        return found

    def login(self, address: str, password: str) -> str:
        _, _, page = self.get("/")
        token = self.token(page)
        status, headers, _ = self.get("/?_task=login", roundcube.login_form(token, address, password))
        assert status == 302 and "_task=mail" in headers["Location"], (status, headers.get("Location"))
        assert "qnwm_sessauth" in self.cookies
        _, _, inbox = self.get("/?_task=mail")
        return self.token(inbox)


def _is_login_page(status: int, headers: http.client.HTTPMessage, body: bytes) -> bool:
    return (status in (200, 401) and headers["Content-Type"].startswith("text/html")
            and b'name="_user"' in body and b"<plist" not in body)


def test_mobileconfig_is_refused_without_a_webmail_session():
    assert _is_login_page(*_https(OFFICIAL_NAME, "GET", MOBILECONFIG))
    forged = _Session()
    forged.cookies = {"qnwm_sessid": uuid.uuid4().hex, "qnwm_sessauth": uuid.uuid4().hex}
    assert _is_login_page(*forged.get(MOBILECONFIG))
    # nor on the client names, whose server has no Roundcube at all
    status, _, _ = _https(f"autoconfig.{_domain()}", "GET", MOBILECONFIG)
    assert status == 404


def test_mobileconfig_of_the_logged_in_user_is_a_wellformed_profile_without_a_password():
    account = json.loads(require_env("QNPROV_TEST_ACCOUNTS"))[-1]
    session = _Session()
    token = session.login(account["address"], account["password"])
    status, headers, body = session.get(MOBILECONFIG)
    assert status == 200, (status, body[:300])
    assert headers["Content-Type"] == "application/x-apple-aspen-config; charset=utf-8"
    assert headers["Content-Disposition"].startswith("attachment;") and headers["Cache-Control"] == "no-store"
    profile = plistlib.loads(body)
    assert (profile["PayloadType"], profile["PayloadVersion"]) == ("Configuration", 1)
    [mail] = profile["PayloadContent"]
    assert (mail["PayloadType"], mail["EmailAccountType"]) == ("com.apple.mail.managed", "EmailTypeIMAP")
    assert (mail["EmailAddress"], mail["IncomingMailServerUsername"], mail["OutgoingMailServerUsername"]) == \
        (account["address"],) * 3
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == (OFFICIAL_NAME, 993, True)
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"]) == (OFFICIAL_NAME, 587, True)
    # no password in the profile, under any key or as any value
    assert account["password"].encode() not in body
    assert [k for k in (*profile, *mail) if "Password" in k] == ["OutgoingPasswordSameAsIncomingPassword"]

    # Settings lists it (in Vietnamese, the default), and its page links to the download
    status, _, settings = session.get("/?_task=settings")
    assert status == 200 and b"plugin.qnprov_mobileconfig-info" in settings
    assert "Thiết bị Apple (iPhone, iPad, Mac)".encode() in settings
    status, _, info = session.get("/?_task=settings&_action=plugin.qnprov_mobileconfig-info&_framed=1")
    assert status == 200 and b'href="./?_task=settings&amp;_action=plugin.qnprov_mobileconfig"' in info
    assert "Hồ sơ không chứa mật khẩu".encode() in info

    # after logout the cookies of the ended session get the login page
    ended = dict(session.cookies)
    session.get(f"/?_task=logout&_token={token}")
    replay = _Session()
    replay.cookies = ended
    assert _is_login_page(*replay.get(MOBILECONFIG))


def test_the_role_checks_the_plugin_against_roundcubes_rcube_plugin():
    # The role's own validate command (tasks/config.yml), run in the lab host: it refuses a
    # plugin that parses (php -l passes) but clashes with the installed rcube_plugin, which
    # would make every webmail page a 500, and accepts the deployed plugin.
    role = paths.PROJECT_ROOT / "roles" / "webmail"
    plugin_class = yaml.safe_load((role / "vars" / "main.yml").read_text())["__webmail_rcube_plugin_class"]
    plugin_dir = yaml.safe_load((role / "vars" / "main.yml").read_text())["__webmail_mobileconfig_plugin_dir"]
    # the plugin's entry in the role's qnprov_files lists (staged, validated, then published)
    [entry] = [e for t in yaml.safe_load((role / "tasks" / "config.yml").read_text()) if "qnprov_files" in t
               for e in t["qnprov_files"]["files"] if e["dest"].endswith("/qnprov_mobileconfig.php")]
    validate = entry["validate"].replace("{{ __webmail_rcube_plugin_class }}", plugin_class)
    container = require_env("QNPROV_TEST_HOST")

    def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", "exec", "-i", container, *argv], input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)

    clash = ("<?php\nclass qnprov_mobileconfig extends rcube_plugin\n{\n    public function init(): void {}\n"
             "    public function info(): void {}\n}\n")
    bad = f"/tmp/qnprov-clash-{uuid.uuid4().hex[:8]}.php"
    assert run("sh", "-c", f"cat > {bad}", stdin=clash).returncode == 0
    try:
        assert run("php", "-l", bad).returncode == 0  # it parses ...
        refused = run(*shlex.split(validate.replace("%s", bad)))
        assert refused.returncode != 0 and "Cannot make static method rcube_plugin::info() non static" in \
            refused.stderr, refused.stderr
    finally:
        run("rm", "-f", bad)
    deployed = run(*shlex.split(validate.replace("%s", f"{plugin_dir}/qnprov_mobileconfig.php")))
    assert deployed.returncode == 0, deployed.stderr
