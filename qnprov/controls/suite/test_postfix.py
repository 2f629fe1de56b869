"""Postfix controls, read from the live configuration (``postconf``, ``postconf -P/-M``)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import effective, file_facts, run

#: Mozilla server-side TLS intermediate suites for TLS 1.2 (ECDHE/DHE with AEAD only).
MOZILLA_INTERMEDIATE_TLS12 = frozenset({
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
})
MOZILLA_CURVES = frozenset({"X25519", "prime256v1", "secp384r1"})
LEGACY_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
SUBMISSION_SERVICES = ("submission/inet", "submissions/inet")


def port25_service(services: list[hoststate.MasterService]) -> str:
    """The master.cf service whose smtpd talks to port-25 clients."""
    fronted = any(s.name in ("smtp", "25") and s.kind == "inet" and s.command == "postscreen" for s in services)
    return "smtpd/pass" if fronted else "smtp/inet"


def submission_services(services: list[hoststate.MasterService]) -> list[str]:
    present = {f"{s.name}/{s.kind}" for s in services}
    names = [name for name in SUBMISSION_SERVICES if name in present]
    if "smtps/inet" in present:
        names.append("smtps/inet")
    return names


def excludes_legacy(value: str) -> bool:
    """True when a Postfix protocol list rules out SSLv2/3, TLSv1 and TLSv1.1."""
    text = value.replace(" ", "")
    if text in (">=TLSv1.2", ">=TLSv1.3"):
        return True
    items = hoststate.split_list(value.replace(":", ","))
    negated = {item[1:] for item in items if item.startswith("!")}
    positive = {item for item in items if not item.startswith("!") and not item.startswith(">=")}
    if positive:
        return positive <= {"TLSv1.2", "TLSv1.3"}
    return set(LEGACY_PROTOCOLS) <= negated


@pytest.mark.control("QN-PFX-01")
def test_port25_tls_is_opportunistic(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    service = port25_service(master_services)
    level = effective(postconf, service_params, service, "smtpd_tls_security_level")
    assert level == "may", f"{service} smtpd_tls_security_level={level!r}; a public MX must offer, not force, TLS"


@pytest.mark.control("QN-PFX-02")
def test_submission_requires_tls(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    present = {f"{s.name}/{s.kind}" for s in master_services}
    assert "submission/inet" in present, "no submission (587) service in master.cf"
    level = effective(postconf, service_params, "submission/inet", "smtpd_tls_security_level")
    assert level == "encrypt", f"submission smtpd_tls_security_level={level!r}, expected encrypt"


@pytest.mark.control("QN-PFX-03")
def test_submissions_wrappermode(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    present = {f"{s.name}/{s.kind}" for s in master_services}
    service = "submissions/inet" if "submissions/inet" in present else "smtps/inet"
    assert service in present, "no submissions (465) service in master.cf"
    mode = effective(postconf, service_params, service, "smtpd_tls_wrappermode")
    assert mode == "yes", f"{service} smtpd_tls_wrappermode={mode!r}, expected yes"


@pytest.mark.control("QN-PFX-04")
def test_tls_protocols_min_tls12(postconf: dict[str, str], service_params: Any) -> None:
    names = ("smtpd_tls_protocols", "smtpd_tls_mandatory_protocols", "smtp_tls_protocols",
             "smtp_tls_mandatory_protocols")
    weak = {name: postconf.get(name, "") for name in names if not excludes_legacy(postconf.get(name, ""))}
    for service, params in service_params.items():
        weak |= {f"{service}/{n}": v for n, v in params.items() if n in names and not excludes_legacy(v)}
    assert not weak, f"protocol settings that still allow TLS < 1.2: {weak}"


def _expand_ciphers(host: Any, cipherlist: str) -> set[str]:
    if not re.fullmatch(r"[A-Za-z0-9_:!+@=\-. ,]*", cipherlist):
        raise ProbeError(f"unexpected characters in cipher list {cipherlist!r}")
    output = run(host, f"openssl ciphers -s -tls1_2 '{cipherlist}'")
    return {name for name in output.strip().split(":") if name and not name.startswith("TLS_")}


@pytest.mark.control("QN-PFX-05")
def test_tls_ciphers_mozilla_intermediate(host: Any, postconf: dict[str, str], service_params: Any) -> None:
    grades = {postconf.get("smtpd_tls_ciphers", "medium"), postconf.get("smtpd_tls_mandatory_ciphers", "medium")}
    for params in service_params.values():
        grades |= {v for n, v in params.items() if n in ("smtpd_tls_ciphers", "smtpd_tls_mandatory_ciphers")}
    outside: dict[str, list[str]] = {}
    for grade in sorted(grades):
        expanded = _expand_ciphers(host, postconf.get(f"tls_{grade}_cipherlist", ""))
        extra = sorted(expanded - MOZILLA_INTERMEDIATE_TLS12)
        if extra:
            outside[grade] = extra
    curves = set(hoststate.split_list(postconf.get("tls_eecdh_auto_curves", "")))
    assert not outside, f"cipher grades {sorted(grades)} enable suites outside Mozilla intermediate: {outside}"
    assert curves and curves <= MOZILLA_CURVES, (
        f"tls_eecdh_auto_curves={sorted(curves)}, expected ⊆ {sorted(MOZILLA_CURVES)}"
    )
    # The server picks the suite: internet.nl and testssl.sh (HIGH "no cipher order") require it;
    # the list itself is Mozilla's, so every suite the server may pick is AEAD with forward secrecy.
    assert postconf.get("tls_preempt_cipherlist") == "yes", "tls_preempt_cipherlist must be yes (server order)"


@pytest.mark.control("QN-PFX-05")
def test_tls_ssl_options(postconf: dict[str, str]) -> None:
    options = {item.upper() for item in hoststate.split_list(postconf.get("tls_ssl_options", ""))}
    missing = {"NO_RENEGOTIATION", "NO_COMPRESSION"} - options
    assert not missing, f"tls_ssl_options lacks {sorted(missing)} (is {sorted(options)})"


@pytest.mark.control("QN-PFX-06")
def test_sasl_tls_auth_only(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    services = submission_services(master_services)
    assert services, "no submission services"
    plain = {s: effective(postconf, service_params, s, "smtpd_tls_auth_only") for s in services}
    assert all(value == "yes" for value in plain.values()), f"smtpd_tls_auth_only per service: {plain}"


@pytest.mark.control("QN-PFX-07")
def test_no_sasl_on_port25(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    service = port25_service(master_services)
    value = effective(postconf, service_params, service, "smtpd_sasl_auth_enable")
    assert value == "no", f"{service} smtpd_sasl_auth_enable={value!r}; SASL belongs on submission only"


@pytest.mark.control("QN-PFX-08")
def test_sasl_dovecot_security_options(postconf: dict[str, str], service_params: Any,
                                       master_services: Any) -> None:
    problems = []
    for service in submission_services(master_services):
        def value(name: str, service: str = service) -> str:
            return effective(postconf, service_params, service, name)

        if value("smtpd_sasl_auth_enable") != "yes":
            problems.append(f"{service}: SASL not enabled")
            continue
        if value("smtpd_sasl_type") != "dovecot":
            problems.append(f"{service}: smtpd_sasl_type={value('smtpd_sasl_type')!r}")
        options = set(hoststate.split_list(value("smtpd_sasl_security_options")))
        if not {"noanonymous", "noplaintext"} <= options:
            problems.append(f"{service}: smtpd_sasl_security_options={sorted(options)}")
        tls_options = set(hoststate.split_list(value("smtpd_sasl_tls_security_options")))
        if "noanonymous" not in tls_options:
            problems.append(f"{service}: smtpd_sasl_tls_security_options={sorted(tls_options)}")
    assert submission_services(master_services), "no submission services"
    assert not problems, "; ".join(problems)


@pytest.mark.control("QN-PFX-09")
def test_relay_restrictions(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    service = port25_service(master_services)
    items = hoststate.split_list(effective(postconf, service_params, service, "smtpd_relay_restrictions"))
    assert "reject_unauth_destination" in items, f"smtpd_relay_restrictions={items} lacks reject_unauth_destination"
    before = items[: items.index("reject_unauth_destination")]
    allowed = {"permit_mynetworks", "permit_sasl_authenticated"}
    loose = [item for item in before if item not in allowed and not item.startswith(("reject_", "defer_", "warn_"))]
    assert not loose, f"smtpd_relay_restrictions permits before reject_unauth_destination: {loose}"


@pytest.mark.control("QN-PFX-10")
def test_mynetworks_loopback_only(postconf: dict[str, str], service_params: Any) -> None:
    loopback, offenders = hoststate.networks_are_loopback(postconf.get("mynetworks", ""))
    assert loopback, f"mynetworks has non-loopback entries: {offenders}"
    for service, params in service_params.items():
        if "mynetworks" in params:
            ok, bad = hoststate.networks_are_loopback(params["mynetworks"])
            assert ok, f"{service} -o mynetworks has non-loopback entries: {bad}"


@pytest.mark.control("QN-PFX-11")
def test_sender_login_mismatch_on_submission(postconf: dict[str, str], service_params: Any,
                                             master_services: Any) -> None:
    problems = []
    for service in submission_services(master_services):
        maps = effective(postconf, service_params, service, "smtpd_sender_login_maps")
        if "ldap:" not in maps:
            problems.append(f"{service}: smtpd_sender_login_maps={maps!r} (expected an LDAP map)")
        restrictions = hoststate.split_list(effective(postconf, service_params, service, "smtpd_sender_restrictions"))
        if not {"reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch"} & set(restrictions):
            problems.append(f"{service}: smtpd_sender_restrictions={restrictions}")
    assert submission_services(master_services), "no submission services"
    assert not problems, "; ".join(problems)


@pytest.mark.control("QN-PFX-12")
def test_vrfy_disabled(postconf: dict[str, str]) -> None:
    value = postconf.get("disable_vrfy_command")
    assert value == "yes", f"disable_vrfy_command={value!r}"


@pytest.mark.control("QN-PFX-13")
def test_helo_restrictions(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    service = port25_service(master_services)
    required = effective(postconf, service_params, service, "smtpd_helo_required")
    assert required == "yes", f"smtpd_helo_required={required!r}"
    items = set(hoststate.split_list(effective(postconf, service_params, service, "smtpd_helo_restrictions")))
    missing = {"reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname"} - items
    assert not missing, f"smtpd_helo_restrictions lacks {sorted(missing)}"


@pytest.mark.control("QN-PFX-14")
def test_banner_hides_software(postconf: dict[str, str]) -> None:
    banner = postconf.get("smtpd_banner", "")
    assert not re.search(r"mail_name|postfix|debian|ubuntu|\$mail_version", banner, re.IGNORECASE), (
        f"smtpd_banner={banner!r} names the software"
    )


@pytest.mark.control("QN-PFX-15")
def test_smuggling_settings(postconf: dict[str, str]) -> None:
    mode = postconf.get("smtpd_forbid_bare_newline", "no").lower()
    assert mode in ("normalize", "yes", "reject"), f"smtpd_forbid_bare_newline={mode!r}"
    exclusions = postconf.get("smtpd_forbid_bare_newline_exclusions", "$mynetworks")
    if exclusions.strip() != "$mynetworks":
        ok, bad = hoststate.networks_are_loopback(exclusions)
        assert ok, f"smtpd_forbid_bare_newline_exclusions exempts non-loopback clients: {bad}"
    data = hoststate.split_list(postconf.get("smtpd_data_restrictions", ""))
    assert "reject_unauth_pipelining" in data, f"smtpd_data_restrictions={data} lacks reject_unauth_pipelining"


@pytest.mark.control("QN-PFX-16")
def test_postscreen_fronts_port25(postconf: dict[str, str], master_services: Any) -> None:
    by_name = {(s.name, s.kind): s for s in master_services}
    front = by_name.get(("smtp", "inet"))
    assert front is not None and front.command == "postscreen", "port 25 (smtp inet) is not served by postscreen"
    assert ("smtpd", "pass") in by_name, "no 'smtpd pass' service behind postscreen"
    assert postconf.get("postscreen_greet_action") in ("enforce", "drop"), (
        f"postscreen_greet_action={postconf.get('postscreen_greet_action')!r}"
    )


#: Anvil limits must be set and no looser than these (per client).
ANVIL_CEILINGS = {
    "smtpd_client_connection_count_limit": 50,
    "smtpd_client_connection_rate_limit": 600,
    "smtpd_client_message_rate_limit": 600,
    "smtpd_client_auth_rate_limit": 300,
}


@pytest.mark.control("QN-PFX-17")
def test_anvil_rate_limits(postconf: dict[str, str]) -> None:
    problems = []
    for name, ceiling in ANVIL_CEILINGS.items():
        value = postconf.get(name, "0")
        if not value.isdigit() or not 0 < int(value) <= ceiling:
            problems.append(f"{name}={value!r} (want 1..{ceiling})")
    exceptions = postconf.get("smtpd_client_event_limit_exceptions", "")
    if exceptions.strip() not in ("", "$mynetworks", "${smtpd_client_connection_limit_exceptions:$mynetworks}"):
        ok, bad = hoststate.networks_are_loopback(exceptions)
        if not ok:
            problems.append(f"smtpd_client_event_limit_exceptions exempts {bad}")
    assert not problems, "; ".join(problems)


@pytest.mark.control("QN-PFX-18")
def test_postfix_check_clean(host: Any) -> None:
    check = host.run("timeout 60 postfix check")
    assert check.rc == 0 and not check.stderr.strip() and not check.stdout.strip(), (
        f"postfix check rc={check.rc}: {(check.stderr + check.stdout).strip()[:600]}"
    )
    conf = host.run("timeout 60 postconf -n")
    assert not conf.stderr.strip(), f"postconf warns: {conf.stderr.strip()[:600]}"


@pytest.mark.control("QN-PFX-19")
def test_outbound_dane(postconf: dict[str, str]) -> None:
    level = postconf.get("smtp_tls_security_level")
    assert level in ("dane", "dane-only"), f"smtp_tls_security_level={level!r}, expected dane"
    assert postconf.get("smtp_dns_support_level") == "dnssec", (
        f"smtp_dns_support_level={postconf.get('smtp_dns_support_level')!r}; DANE needs dnssec"
    )


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@pytest.mark.control("QN-PFX-20")
def test_postfix_version(postconf: dict[str, str]) -> None:
    version = postconf.get("mail_version", "")
    assert _version_tuple(version) >= (3, 7, 10), f"Postfix {version} predates the SMTP smuggling fix (3.7.10)"


def _ldap_map_paths(values: dict[str, str], postconf: dict[str, str]) -> set[str]:
    paths = set()
    for raw in values.values():
        value = hoststate.expand_parameters(raw, postconf)
        for match in re.finditer(r"(?:proxy:)?ldap:(/[^\s,]+)", value):
            paths.add(match.group(1))
    return paths


@pytest.mark.control("QN-PFX-21")
def test_virtual_maps_from_ldap(host: Any, postconf: dict[str, str]) -> None:
    for name in ("virtual_mailbox_domains", "virtual_mailbox_maps"):
        assert "ldap:" in postconf.get(name, ""), f"{name}={postconf.get(name)!r} is not an LDAP lookup"
    mailbox_maps = _ldap_map_paths({"m": postconf["virtual_mailbox_maps"]}, postconf)
    filters = []
    for path in sorted(mailbox_maps):
        text = run(host, f"grep -E '^[[:space:]]*query_filter' {path}", ok=(0, 1))
        filters.append(text.strip())
    assert any("qnAccountStatus=active" in f for f in filters), (
        f"virtual_mailbox_maps query filters {filters} don't require qnAccountStatus=active"
    )


@pytest.mark.control("QN-PFX-22")
def test_ldap_map_files_protected(host: Any, postconf: dict[str, str]) -> None:
    paths = _ldap_map_paths(postconf, postconf)
    assert paths, "no LDAP maps configured"
    bad = []
    for path in sorted(paths):
        facts = file_facts(host, path)
        if (facts["user"], facts["group"], facts["mode"]) != ("root", "postfix", 0o640):
            bad.append(f"{path} {facts['user']}:{facts['group']} {facts['mode']:04o}")
    assert not bad, f"LDAP map files must be 0640 root:postfix: {bad}"


def _is_rspamd(milter: str) -> bool:
    return "rspamd" in milter or milter.endswith(":11332")


@pytest.mark.control("QN-PFX-23")
def test_milters_in_mail_path(postconf: dict[str, str], service_params: Any, master_services: Any) -> None:
    service = port25_service(master_services)
    milters = hoststate.split_list(effective(postconf, service_params, service, "smtpd_milters"))
    assert any(_is_rspamd(m) for m in milters), f"smtpd_milters={milters}: rspamd is not in the mail path"
    others = [m for m in milters if not _is_rspamd(m)]
    assert others, f"smtpd_milters={milters}: the decision's policy milter is not in the mail path"
    for name in submission_services(master_services):
        sub = hoststate.split_list(effective(postconf, service_params, name, "smtpd_milters"))
        assert set(milters) <= set(sub), f"{name} smtpd_milters={sub} skips filters of port 25 {milters}"
    action = postconf.get("milter_default_action")
    assert action == "tempfail", f"milter_default_action={action!r}: unfiltered mail must be deferred, not accepted"
