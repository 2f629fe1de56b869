"""Parsers of host state and scanner output, on captured real-world text."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from qnprov.controls import hoststate, scanners

DATA = Path(__file__).parent / "data"

POSTCONF_P = """\
submission/inet/smtpd_sender_restrictions = $mua_sender_restrictions
submission/inet/smtpd_tls_security_level = encrypt
submissions/inet/smtpd_tls_wrappermode = yes
relay/unix/syslog_name = postfix/$service_name
"""

POSTCONF_M = """\
smtp       inet  n       -       y       -       1       postscreen
smtpd      pass  -       -       y       -       -       smtpd
submission inet  n       -       y       -       -       smtpd -o syslog_name=postfix/submission
"""


def test_postconf_parsers_and_reference_expansion() -> None:
    main = hoststate.parse_postconf("mynetworks = 127.0.0.0/8 [::1]/128\nsmtpd_milters =\n"
                                    "mua_sender_restrictions = reject_non_fqdn_sender, reject_sender_login_mismatch\n")
    assert main["smtpd_milters"] == ""
    services = hoststate.parse_service_params(POSTCONF_P)
    assert services["submission/inet"]["smtpd_tls_security_level"] == "encrypt"
    assert services["relay/unix"]["syslog_name"] == "postfix/$service_name"
    expanded = hoststate.expand_parameters(services["submission/inet"]["smtpd_sender_restrictions"], main)
    assert "reject_sender_login_mismatch" in hoststate.split_list(expanded)
    assert hoststate.expand_parameters("${stress?{2}:{6}}s", main) == "${stress?{2}:{6}}s"
    master = hoststate.parse_master_services(POSTCONF_M)
    assert [(s.name, s.kind, s.command) for s in master] == [
        ("smtp", "inet", "postscreen"), ("smtpd", "pass", "smtpd"), ("submission", "inet", "smtpd")]
    assert master[2].args == ("-o", "syslog_name=postfix/submission")


def test_networks_are_loopback() -> None:
    assert hoststate.networks_are_loopback("127.0.0.0/8 [::1]/128") == (True, [])
    assert hoststate.networks_are_loopback("127.0.0.0/8, 10.0.0.0/8") == (False, ["10.0.0.0/8"])
    assert hoststate.networks_are_loopback("") == (True, [])
    assert hoststate.networks_are_loopback("hash:/etc/postfix/network_table")[0] is False


def test_ldif_unfolds_and_decodes() -> None:
    secret = base64.b64encode(b"{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA").decode()
    text = ("dn: cn=config\nobjectClass: olcGlobal\nolcDisallows: bind_anon\nolcTLSProtocolMin: 3.3\n\n"
            "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n"
            "olcAccess: {0}to attrs=userPassword by self =w by anonymous auth\n  by * none\n"
            f"userPassword:: {secret}\n")
    entries = hoststate.parse_ldif(text)
    assert hoststate.global_config(entries)["olcdisallows"] == ["bind_anon"]
    database = hoststate.data_databases(entries)[0]
    assert hoststate.strip_ordering(database["olcaccess"][0]).endswith("by anonymous auth by * none")
    assert database["userpassword"][0].startswith("{ARGON2}")


def test_ss_sshd_fail2ban_parsers() -> None:
    listeners = hoststate.parse_ss_listeners(
        'LISTEN 0 100 0.0.0.0:993 0.0.0.0:* users:(("dovecot",pid=1,fd=39))\n'
        "LISTEN 0 2048 127.0.0.1:389 0.0.0.0:*\nLISTEN 0 100 [::]:25 [::]:*\n")
    assert [(x.address, x.port, x.process, x.loopback) for x in listeners] == [
        ("0.0.0.0", 993, "dovecot", False),  # noqa: S104 - parsed text, not a bind
        ("127.0.0.1", 389, "", True), ("::", 25, "", False)]
    sshd = hoststate.parse_sshd_t("port 22\nPermitRootLogin prohibit-password\nciphers aes256-gcm@openssh.com\n")
    assert sshd["permitrootlogin"] == "prohibit-password"
    dump = hoststate.parse_fail2ban_dump("['set', 'loglevel', 'INFO']\n['add', 'sshd', 'systemd']\n"
                                         "['add', 'postfix', 'systemd']\nnot a list\n")
    assert hoststate.fail2ban_jail_backends(dump) == {"sshd": "systemd", "postfix": "systemd"}
    status = "Status\n|- Number of jail:      2\n`- Jail list:   postfix, sshd\n"
    assert hoststate.parse_fail2ban_status(status) == ["postfix", "sshd"]


def test_nft_parser_on_real_rulesets() -> None:
    hardened = hoststate.parse_nft_input((DATA / "nft-ruleset.json").read_text())
    assert hardened.default_drop and hardened.drop_families == {"inet"}
    assert hardened.accepted_tcp_ports == {22, 25, 143, 465, 587, 636, 993, 4190}
    assert hardened.unconditional_accepts == []
    assert len(hardened.source_accepts) == 1 and "192.0.2.0" in hardened.source_accepts[0]
    open_ruleset = hoststate.parse_nft_input((DATA / "nft-open.json").read_text())
    assert not open_ruleset.default_drop
    assert open_ruleset.accepted_tcp_ports == set()


def test_nft_fail2ban_accept_chain_opens_nothing() -> None:
    """A converged lab host: our drop chain plus fail2ban's accept-policy f2b-chain."""
    ruleset = hoststate.parse_nft_input((DATA / "nft-with-fail2ban.json").read_text())
    assert {c["table"] for c in ruleset.chains} == {"qnprov_filter", "f2b-table"}
    assert ruleset.default_drop
    assert ruleset.unconditional_accepts == []
    assert {22, 25, 465, 587, 993, 4190} <= ruleset.accepted_tcp_ports


def test_openssl_key_text() -> None:
    assert hoststate.parse_openssl_key_bits("Public-Key: (256 bit)\n ASN1 OID: prime256v1\n NIST CURVE: P-256") == (
        "EC prime256v1", 256)
    assert hoststate.parse_openssl_key_bits("Public-Key: (2048 bit)\nModulus:\n 00:ab") == ("RSA", 2048)


def test_lynis_report() -> None:
    report = scanners.parse_lynis_report("hardening_index=71\nwarning[]=FIRE-4512|No firewall|-|-|\n"
                                         "suggestion[]=SSH-7408|tweak|-|-|\n")
    assert report["hardening_index"] == 71
    assert report["warnings"] == ["FIRE-4512|No firewall|-|-|"]
    assert scanners.parse_lynis_report("")["hardening_index"] is None


def test_testssl_json_parsing_and_gate() -> None:
    findings = [
        {"id": "SSLv3", "ip": "127.0.0.1/127.0.0.1", "port": "465", "severity": "OK", "finding": "not offered"},
        {"id": "TLS1_1", "severity": "LOW", "finding": "offered (deprecated)"},
        {"id": "BREACH", "severity": "MEDIUM", "finding": "potentially VULNERABLE"},
        {"id": "cert_chain_of_trust", "severity": "CRITICAL", "finding": "failed (self signed)"},
        {"id": "scanTime", "severity": "WARN", "finding": "61"},
        {"id": "scanProblem", "severity": "FATAL", "finding": "no TLS"},
    ]
    result = scanners.parse_testssl_json(json.dumps(findings), service="submissions", address="127.0.0.1:10465")
    assert [f.id for f in result.at_least("HIGH")] == ["cert_chain_of_trust"]
    assert result.count("MEDIUM") == 1
    assert result.summary()["critical"] == 1
    assert result.scan_problems == ["scanProblem: no TLS"]
    assert result.warnings == ["scanTime: 61"]
    broken = scanners.parse_testssl_json("[", service="smtp", address="x")
    assert broken.scan_problems and not broken.findings
    empty = scanners.parse_testssl_json("[]", service="smtp", address="x")
    assert empty.scan_problems == ["testssl reported no findings at all (scan did not run?)"]


def test_testssl_command_stays_on_the_given_address() -> None:
    command = scanners.testssl_command("127.0.0.1", 10465, "/tmp/x.json", starttls=None,
                                       ca_file="/ca.pem", server_name="mail1.quangninh.test")
    assert command[-3:] == ["--ip", "127.0.0.1", "mail1.quangninh.test:10465"]
    assert "--nodns" in command and command[command.index("--nodns") + 1] == "none"
    assert command[command.index("--add-ca") + 1] == "/ca.pem"
    smtp = scanners.testssl_command("127.0.0.1", 10025, "/tmp/y.json", starttls="smtp", ca_file=None)
    assert smtp[smtp.index("--starttls") + 1] == "smtp" and smtp[-1] == "127.0.0.1:10025"


RSPAMD_MODULES = """\
Modules enabled: bayes_expiry, chartable, arc, dkim, dmarc, spf, milter_headers
Modules disabled (explicitly): dcc, fuzzy_check, rbl, asn
Modules disabled (unconfigured): clustering, antivirus
Modules disabled (no Redis):
"""


def test_rspamd_module_states_from_configdump() -> None:
    states = hoststate.parse_rspamd_module_states(RSPAMD_MODULES)
    assert {"spf", "dkim", "dmarc"} <= states["enabled"]
    assert "fuzzy_check" in states["disabled"] and "fuzzy_check" not in states["enabled"]
    assert hoststate.parse_rspamd_module_states("garbage") == {}
