"""Client autoconfiguration (issue 14) as the webmail role renders it.

The Thunderbird XML is parsed and its servers checked exactly. The Outlook
Autodiscover script runs under the real PHP (Debian's php-cgi, the same PHP 8.2
as the lab's php-fpm; scripts/bootstrap.sh installs it) with a CGI request on
stdin, as PHP-FPM would hand it over: a good request gets the settings, every
hostile one (XXE, entity bombs, UTF-16 disguise, oversized, no address, two
addresses, another domain, another schema, GET) gets the defined 400 refusal.
tests/integration/test_autoconfig_lab.py drives the deployed result.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET  # the XML parsed here is our own rendering
from pathlib import Path

import pytest
from test_webmail_templates import _variables, render

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
DOMAINS = ["quangninh.test", "xaydung.quangninh.test"]


def _vars(**overrides: object) -> dict:
    return _variables(qnprov_hosted_domains=DOMAINS, **overrides)


def _request(address: str = "annv@quangninh.test", schema: str = OUTLOOK_NS) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{REQUEST_NS}">\n  <Request>\n'
            f"    <EMailAddress>{address}</EMailAddress>\n"
            f"    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\n  </Request>\n</Autodiscover>\n")


def _defaults_rendered(text: str, variables: dict) -> str:
    """Resolve the role defaults that are themselves templates (as Ansible would)."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 (not HTML)
    return env.from_string(text).render(variables)


def _resolved(**overrides: object) -> dict:
    variables = _vars(**overrides)
    for name in ("webmail_autoconfig_domains", "webmail_autoconfig_server"):
        if isinstance(variables[name], str) and "{{" in variables[name]:
            value = _defaults_rendered(variables[name], variables)
            variables[name] = ast.literal_eval(value) if value.startswith("[") else value
    return variables


def test_defaults_follow_the_hosted_domains_and_the_official_name() -> None:
    variables = _resolved()
    assert variables["webmail_autoconfig_domains"] == DOMAINS
    assert variables["webmail_autoconfig_server"] == "mail1.quangninh.test"


def test_thunderbird_xml_names_exactly_the_tls_servers() -> None:
    root = ET.fromstring(render("webmail/autoconfig-config-v1.1.xml.j2", _resolved()).encode())  # noqa: S314
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "quangninh.test"
    assert [d.text for d in provider.findall("domain")] == DOMAINS

    def server(element: ET.Element) -> tuple:
        return (element.get("type"), element.findtext("hostname"), element.findtext("port"),
                element.findtext("socketType"), element.findtext("username"), element.findtext("authentication"))

    assert [server(e) for e in provider.findall("incomingServer")] == [
        ("imap", "mail1.quangninh.test", "993", "SSL", "%EMAILADDRESS%", "password-cleartext")]
    assert [server(e) for e in provider.findall("outgoingServer")] == [
        ("smtp", "mail1.quangninh.test", "587", "STARTTLS", "%EMAILADDRESS%", "password-cleartext"),
        ("smtp", "mail1.quangninh.test", "465", "SSL", "%EMAILADDRESS%", "password-cleartext")]
    assert provider.findtext("displayName") == "Thư điện tử công vụ"


def test_thunderbird_xml_escapes_the_display_name() -> None:
    text = render("webmail/autoconfig-config-v1.1.xml.j2", _resolved(webmail_product_name="Mail <&> \"Q\""))
    assert ET.fromstring(text.encode()).findtext("emailProvider/displayName") == 'Mail <&> "Q"'  # noqa: S314


def _servers(text: str) -> list[str]:
    return ["server {" + block for block in text.split("\nserver {")[1:]]


def test_nginx_serves_autoconfig_on_the_client_names_and_the_official_name() -> None:
    text = render("webmail/nginx-webmail.conf.j2", _resolved())
    webmail, autoconfig = _servers(text)
    assert "server_name mail1.quangninh.test;" in webmail
    names = re.search(r"server_name ([^;]+);", autoconfig)
    assert names and names.group(1).split() == [
        "autoconfig.quangninh.test", "autodiscover.quangninh.test",
        "autoconfig.xaydung.quangninh.test", "autodiscover.xaydung.quangninh.test"]
    for block in (webmail, autoconfig):
        # types { } empties mime.types (included by the webmail server: .xml would be text/xml there)
        assert ("location = /.well-known/autoconfig/mail/config-v1.1.xml {\n        types { }\n"
                "        default_type application/xml;\n"
                "        alias /var/www/qnprov-autoconfig/config-v1.1.xml;") in block
        autodiscover = block.split(r"location ~* ^/autodiscover/autodiscover\.xml$ {", 1)[1].split("}", 1)[0]
        assert "client_max_body_size 8192;" in autodiscover
        assert "fastcgi_param SCRIPT_FILENAME /var/www/qnprov-autoconfig/autodiscover.php;" in autodiscover
        assert "fastcgi_pass unix:/run/php/qnprov-webmail.sock;" in autodiscover
    assert "location = /mail/config-v1.1.xml {\n        types { }\n        default_type application/xml;" in autoconfig
    assert "location = /mail/" not in webmail
    # Nothing else on the client names; headers only at server level (a location's would drop them).
    assert autoconfig.count("location ") == 4 and "location / {\n        return 404;" in autoconfig
    assert "ssl_certificate /etc/qnprov/tls/fullchain.pem;" in autoconfig
    assert "X-Content-Type-Options" in autoconfig and "frame-ancestors 'none'" in autoconfig
    assert all(line.startswith("    add_header") for line in autoconfig.splitlines() if "add_header" in line)


def test_nginx_without_autoconfig_has_neither_server_nor_locations() -> None:
    text = render("webmail/nginx-webmail.conf.j2", _resolved(webmail_autoconfig_enabled=False))
    assert len(_servers(text)) == 1 and "autoconfig" not in text.replace("# Client autoconfiguration", "")
    assert "autodiscover" not in text


# --- the Autodiscover script under the real PHP -------------------------------------------------


@pytest.fixture(scope="module")
def autodiscover(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("php-cgi"), "php-cgi is not installed (run scripts/bootstrap.sh)"
    script = tmp_path_factory.mktemp("autodiscover") / "autodiscover.php"
    script.write_text(render("webmail/autodiscover.php.j2", _resolved()))
    lint = subprocess.run(["php-cgi", "-l", str(script)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    return script


def _post(script: Path, body: bytes, *, method: str = "POST",
          content_length: int | None = None) -> tuple[int, dict[str, str], str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIRECT_STATUS": "200", "GATEWAY_INTERFACE": "CGI/1.1",
           "SCRIPT_FILENAME": str(script), "REQUEST_METHOD": method, "CONTENT_TYPE": "text/xml",
           "CONTENT_LENGTH": str(len(body) if content_length is None else content_length)}
    proc = subprocess.run(["php-cgi"], input=body, env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    head, _, text = proc.stdout.decode("utf-8").partition("\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.split("\r\n") if ": " in line)
    status = int(headers.pop("Status", "200 OK").split()[0])
    return status, headers, text


def test_autodiscover_answers_the_imap_and_smtp_settings_with_the_address(autodiscover: Path) -> None:
    status, headers, text = _post(autodiscover, _request("Annv@QuangNinh.test").encode())
    assert status == 200 and headers["Content-Type"] == "application/xml; charset=utf-8"
    root = ET.fromstring(text.encode())  # noqa: S314 (the script's own answer)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    assert account is not None
    assert account.findtext(f"{{{OUTLOOK_NS}}}AccountType") == "email"
    assert account.findtext(f"{{{OUTLOOK_NS}}}Action") == "settings"
    protocols = {p.findtext(f"{{{OUTLOOK_NS}}}Type"): {c.tag.split("}")[1]: c.text for c in p}
                 for p in account.findall(f"{{{OUTLOOK_NS}}}Protocol")}
    assert set(protocols) == {"IMAP", "SMTP"}
    assert protocols["IMAP"]["Server"] == protocols["SMTP"]["Server"] == "mail1.quangninh.test"
    assert (protocols["IMAP"]["Port"], protocols["IMAP"]["Encryption"]) == ("993", "SSL")
    assert (protocols["SMTP"]["Port"], protocols["SMTP"]["Encryption"]) == ("587", "TLS")
    assert protocols["IMAP"]["LoginName"] == protocols["SMTP"]["LoginName"] == "Annv@QuangNinh.test"
    assert protocols["IMAP"]["SPA"] == protocols["SMTP"]["SPA"] == "off"
    assert protocols["IMAP"]["AuthRequired"] == protocols["SMTP"]["AuthRequired"] == "on"


def test_autodiscover_serves_every_hosted_domain(autodiscover: Path) -> None:
    status, _, text = _post(autodiscover, _request("an@xaydung.quangninh.test").encode())
    assert status == 200 and "<LoginName>an@xaydung.quangninh.test</LoginName>" in text


XXE_FILE = (f'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            f'<Autodiscover xmlns="{REQUEST_NS}"><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>')
BILLION_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                  + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
                  + f']>\n<Autodiscover xmlns="{REQUEST_NS}"><Request><EMailAddress>&i;@quangninh.test'
                  "</EMailAddress></Request></Autodiscover>")
PARAMETER_ENTITY = ('<?xml version="1.0"?>\n<!doctype a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>\n'
                    + _request())


@pytest.mark.parametrize(("body", "reason"), [
    (XXE_FILE.encode(), "DTDs are not accepted"),
    (BILLION_LAUGHS.encode(), "DTDs are not accepted"),
    (PARAMETER_ENTITY.encode(), "DTDs are not accepted"),
    # The same XXE in UTF-16 would hide "<!DOCTYPE" from a byte search: refused as not UTF-8.
    (XXE_FILE.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16"),
     "request is not UTF-8 text"),
    (b"", "empty request"),
    (b"annv@quangninh.test", "request is not well-formed XML"),
    (_request().encode()[:-20], "request is not well-formed XML"),
    (_request().replace(REQUEST_NS, "urn:other").encode(), "not an Outlook Autodiscover request"),
    (_request().replace("<EMailAddress>annv@quangninh.test</EMailAddress>", "").encode(),
     "exactly one EMailAddress is needed"),
    (_request().replace("</EMailAddress>", "</EMailAddress><EMailAddress>binhtt@quangninh.test</EMailAddress>")
     .encode(), "exactly one EMailAddress is needed"),
    (_request("annv@gmail.com").encode(), "EMailAddress is not of a domain served here"),
    (_request("annv@quangninh.test.evil.example").encode(), "EMailAddress is not of a domain served here"),
    (_request("annv@evilquangninh.test").encode(), "EMailAddress is not of a domain served here"),
    (_request("a&lt;b&gt;@quangninh.test").encode(), "EMailAddress is not a mail address"),
    (_request("annv").encode(), "EMailAddress is not a mail address"),
    (_request("annv@quangninh.test", "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/"
              "responseschema/2006").encode(), "only the Outlook response schema 2006a is offered"),
], ids=["xxe-file", "billion-laughs", "parameter-entity", "utf16-xxe", "empty", "not-xml", "truncated",
        "other-namespace", "no-address", "two-addresses", "free-mail-domain", "suffix-domain", "prefix-domain",
        "markup-in-address", "no-domain", "mobilesync-schema"])
def test_autodiscover_refuses_hostile_and_foreign_requests(autodiscover: Path, body: bytes, reason: str) -> None:
    status, headers, text = _post(autodiscover, body)
    assert (status, text) == (400, f"autodiscover: {reason}\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "root:" not in text


def test_autodiscover_refuses_an_oversized_request(autodiscover: Path) -> None:
    padding = "<!-- " + "x" * 9000 + " -->"
    body = _request().replace("<Request>", f"<Request>{padding}").encode()
    assert len(body) > 8192
    assert _post(autodiscover, body)[::2] == (400, "autodiscover: request too large\n")
    # Declared small but sent large (nginx always passes the real length; the script reads at most
    # one byte past the bound and refuses what it read).
    assert _post(autodiscover, body, content_length=8193)[::2] == (400, "autodiscover: request too large\n")
    # Just under the bound is fine.
    fitting = _request().replace("<Request>", "<Request><!-- " + "x" * (8192 - len(_request()) - 20) + " -->").encode()
    assert len(fitting) <= 8192 and _post(autodiscover, fitting)[0] == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_autodiscover_refuses_other_methods(autodiscover: Path, method: str) -> None:
    status, _, text = _post(autodiscover, _request().encode(), method=method)
    assert status == 400
    if method != "HEAD":
        assert text == "autodiscover: POST an Outlook Autodiscover request\n"


# --- the Apple .mobileconfig plugin under the real PHP ------------------------------------------
# Roundcube itself is not on this machine: a two-class harness stands in for rcube_plugin and
# rcmail (the logged-in user's name is all the plugin asks of them) and calls the plugin's own
# download action. tests/integration/test_autoconfig_lab.py drives it inside the real Roundcube.

_HARNESS = """<?php
class rcube_plugin { public $actions = []; public function register_action($a, $c) { $this->actions[$a] = $c; }
                     public function add_hook($h, $c) {} }
class rcmail { public static function get_instance() { return new rcmail(); }
               public function get_user_name() { return getenv('QN_USER'); } }
require getenv('QN_PLUGIN');
$plugin = new qnprov_mobileconfig();
$plugin->init();
call_user_func($plugin->actions['plugin.qnprov_mobileconfig']);
"""


@pytest.fixture(scope="module")
def mobileconfig(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    assert shutil.which("php-cgi"), "php-cgi is not installed (run scripts/bootstrap.sh)"
    where = tmp_path_factory.mktemp("mobileconfig")
    plugin = where / "qnprov_mobileconfig.php"
    plugin.write_text(render("webmail/qnprov_mobileconfig.php.j2",
                             _resolved(webmail_product_name="Thư điện tử 'công vụ' <&>")))
    lint = subprocess.run(["php-cgi", "-l", str(plugin)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    harness = where / "harness.php"
    harness.write_text(_HARNESS)
    return harness, plugin


def _profile(mobileconfig: tuple[Path, Path], user: str) -> tuple[int, dict[str, str], bytes]:
    harness, plugin = mobileconfig
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIRECT_STATUS": "200", "GATEWAY_INTERFACE": "CGI/1.1",
           "SCRIPT_FILENAME": str(harness), "REQUEST_METHOD": "GET", "QN_USER": user, "QN_PLUGIN": str(plugin)}
    proc = subprocess.run(["php-cgi"], env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
    return int(headers.pop("Status", "200 OK").split()[0]), headers, body


def test_mobileconfig_is_the_users_imap_and_submission_profile_without_a_password(mobileconfig) -> None:
    import plistlib

    status, headers, body = _profile(mobileconfig, "annv@quangninh.test")
    assert status == 200
    assert headers["Content-Type"] == "application/x-apple-aspen-config; charset=utf-8"
    assert headers["Content-Disposition"] == 'attachment; filename="annv_quangninh.test.mobileconfig"'
    assert headers["Cache-Control"] == "no-store"
    profile = plistlib.loads(body)
    assert (profile["PayloadType"], profile["PayloadVersion"]) == ("Configuration", 1)
    assert profile["PayloadDisplayName"] == "Thư điện tử 'công vụ' <&>"
    assert profile["PayloadIdentifier"].startswith("test.quangninh.mail1.mobileconfig.")
    [mail] = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed" and mail["EmailAccountType"] == "EmailTypeIMAP"
    assert (mail["EmailAddress"], mail["IncomingMailServerUsername"], mail["OutgoingMailServerUsername"]) == \
        ("annv@quangninh.test",) * 3
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == ("mail1.quangninh.test", 993, True)
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"]) == ("mail1.quangninh.test", 587, True)
    assert mail["IncomingMailServerAuthentication"] == mail["OutgoingMailServerAuthentication"] == "EmailAuthPassword"
    # no password anywhere: the device asks for it
    secrets = [k for k in (*profile, *mail) if "Password" in k and k != "OutgoingPasswordSameAsIncomingPassword"]
    assert secrets == [] and mail["OutgoingPasswordSameAsIncomingPassword"] is True
    # UUIDs are stable per address (a second install replaces the first) and differ between addresses
    again = plistlib.loads(_profile(mobileconfig, "annv@quangninh.test")[2])
    other = plistlib.loads(_profile(mobileconfig, "binhtt@xaydung.quangninh.test")[2])
    assert again["PayloadUUID"] == profile["PayloadUUID"] != other["PayloadUUID"]
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-5[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}", profile["PayloadUUID"])


@pytest.mark.parametrize("user", ["someone@example.org", "annv", "a<b>@quangninh.test", ""])
def test_mobileconfig_refuses_a_user_outside_the_served_domains(mobileconfig, user: str) -> None:
    status, headers, body = _profile(mobileconfig, user)
    assert (status, body) == (404, b"mobileconfig: this account is not of a domain served here\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
