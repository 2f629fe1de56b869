"""The lab host's own resolver (roles/resolver): local answers, nothing sent out, deterministic rspamd scores.

Queries go to unbound inside the container (podman exec), built and parsed with
dnspython on this side. unbound's own counters (unbound-control stats_noreset)
show whether a query went past the local data.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import jinja2
import pytest
import yaml
from labenv import require_env

from qnprov import paths

pytestmark = pytest.mark.lab

#: Sends one DNS query (wire format on stdin) to unbound on the container's loopback.
_QUERY = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5);"
          "s.sendto(sys.stdin.buffer.read(),('127.0.0.1',53));sys.stdout.buffer.write(s.recv(65535))")
#: The podman bridge gateway: where published-port traffic, an outside MTA, comes from.
BRIDGE_GATEWAY = "10.88.0.1"
RSPAMD_NORMAL = yaml.safe_load((paths.ROLES_DIR / "rspamd" / "defaults" / "main.yml").read_text())[
    "rspamd_normal_bind"]


@pytest.fixture(scope="module")
def container() -> str:
    return require_env("QNPROV_TEST_HOST")


def _exec(container: str, *argv: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(["podman", "exec", "-i", container, *argv], input=data, capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}"
    return proc.stdout


def _query(container: str, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    return dns.message.from_wire(_exec(container, "python3", "-c", _QUERY, data=query.to_wire()))


def _answers(reply: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in reply.answer for rdata in rrset)


def _stats(container: str) -> dict[str, float]:
    text = _exec(container, "unbound-control", "-c", "/etc/unbound/unbound.conf", "stats_noreset").decode()
    return {key: float(value) for key, _, value in (line.partition("=") for line in text.splitlines()) if value}


def test_lab_and_test_domains_are_answered_from_local_data(container: str) -> None:
    expected = {
        ("mx.example.org", "A"): [BRIDGE_GATEWAY],
        ("client.example.org", "A"): ["192.0.2.25"],
        ("example.org", "MX"): ["10 mx.example.org."],
        ("example.org", "TXT"): ['"v=spf1 ip4:10.88.0.0/16 ip4:192.0.2.0/24 -all"'],
        ("facebookmail.com", "MX"): ["10 mx.example.org."],
        ("quangninh.test", "MX"): ["10 mail1.quangninh.test."],
        ("1.0.88.10.in-addr.arpa", "PTR"): ["mx.example.org."],
    }
    for (name, rdtype), answer in expected.items():
        reply = _query(container, name, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, f"{name} {rdtype}: {dns.rcode.to_text(reply.rcode())}"
        assert reply.flags & dns.flags.AA, f"{name} {rdtype} was not answered from local data"
        assert _answers(reply) == answer, f"{name} {rdtype}"
    # A name in a local zone that the data does not hold is NXDOMAIN, not a lookup outside.
    assert _query(container, "nobody.example.org", "A").rcode() == dns.rcode.NXDOMAIN


def test_outside_names_are_refused_without_a_query_leaving(container: str) -> None:
    before = _stats(container)
    names = [f"q{uuid.uuid4().hex[:8]}.gmail.com", "zen.spamhaus.org", "2.0.0.127.zen.spamhaus.org",
             "www.example.com", "quangninh.gov.vn"]
    for name in names:
        reply = _query(container, name, "A")
        assert reply.rcode() == dns.rcode.REFUSED, f"{name}: {dns.rcode.to_text(reply.rcode())}"
        assert not reply.answer, f"{name} got an answer: {_answers(reply)}"
    after = _stats(container)
    assert after["total.num.queries"] - before["total.num.queries"] >= len(names)
    assert after["num.answer.rcode.REFUSED"] - before.get("num.answer.rcode.REFUSED", 0) >= len(names)
    # Nothing went past the local zones: no cache miss, no recursion, no query out.
    assert after["total.num.cachemiss"] == before["total.num.cachemiss"], (after, before)
    assert after["total.num.recursivereplies"] == before["total.num.recursivereplies"]
    for key in ("num.query.tcpout", "num.query.udpout"):
        assert after[key] == before[key], f"{key}: {before[key]} -> {after[key]}"


def test_the_only_servers_unbound_asked_are_the_mirror_forwarders(container: str) -> None:
    lab = yaml.safe_load((paths.PROJECT_ROOT / "inventories" / "lab" / "group_vars" / "all" / "main.yml").read_text())
    forwarded = {f"{name.rstrip('.')}." for name in lab["resolver_offline_forward_zones"]}
    upstream = set(_exec(container, "cat", "/etc/unbound/qnprov-upstream-nameservers").decode().split())
    assert upstream, "no upstream nameservers recorded"
    # The infrastructure cache holds every server unbound sent a query to in the last 15 minutes
    # (infra-host-ttl), the lab's converge and the suites before this test included.
    infra = _exec(container, "unbound-control", "-c", "/etc/unbound/unbound.conf", "dump_infra").decode()
    contacted = {tuple(line.split()[:2]) for line in infra.splitlines() if line.strip()}
    stray = sorted((ip, zone) for ip, zone in contacted if ip not in upstream or zone not in forwarded)
    assert not stray, f"unbound queried servers outside the mirror's forward zones: {stray}"


def test_the_lab_configuration_the_unit_tests_render_passes_unbound_checkconf(container: str) -> None:
    defaults = yaml.safe_load((paths.ROLES_DIR / "resolver" / "defaults" / "main.yml").read_text())
    lab = yaml.safe_load((paths.PROJECT_ROOT / "inventories" / "lab" / "group_vars" / "all" / "main.yml").read_text())
    variables = defaults | {k: v for k, v in lab.items() if k.startswith("resolver_")}
    variables["__resolver_upstream"] = ["192.0.2.53"]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths.PROJECT_ROOT / "templates" / "resolver"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
                             autoescape=False)  # noqa: S701
    rendered = env.get_template("unbound.conf.j2").render(variables).encode()
    path = f"/tmp/qnprov-test-unbound-{uuid.uuid4().hex[:8]}.conf"
    _exec(container, "sh", "-c", f"cat > {path}", data=rendered)
    try:
        out = _exec(container, "unbound-checkconf", path).decode()
    finally:
        _exec(container, "rm", "-f", path)
    assert out.strip() == f"unbound-checkconf: no errors in {path}"
    # And the deployed file is the same template with the same data.
    deployed = _exec(container, "unbound-checkconf", "-o", "module-config", "/etc/unbound/unbound.conf").decode()
    assert deployed.strip() == "validator iterator"


def _scan_from(container: str, domain: str, helo: str) -> dict[str, Any]:
    sender = f"sender-{uuid.uuid4().hex[:8]}@{domain}"
    message = "\r\n".join([
        f"From: Outside Sender <{sender}>", "To: <binhtt@quangninh.test>", "Subject: resolver determinism",
        f"Date: {format_datetime(datetime.now(UTC))}", f"Message-ID: {make_msgid(domain=domain)}",
        "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", "Kính gửi các đồng chí.", ""]).encode()
    reply: dict[str, Any] = json.loads(_exec(
        container, "rspamc", "-h", RSPAMD_NORMAL, "-j", "-F", sender, "-r", "binhtt@quangninh.test",
        "-i", BRIDGE_GATEWAY, "--helo", helo, "--hostname", helo, data=message))
    return reply


def test_rspamd_asks_the_local_resolver_and_is_refused_for_unknown_names(container: str) -> None:
    # The counter-case: a sender outside the lab data scores the NORES symbols, because
    # unbound refused the lookups (not because some host DNS timed out).
    reply = _scan_from(container, f"nowhere-{uuid.uuid4().hex[:6]}.com", "mx.nowhere.com")
    symbols = reply["symbols"]
    assert "HFILTER_FROMHOST_NORES_A_OR_MX" in symbols, sorted(symbols)
    assert "query refused" in " ".join(symbols["DMARC_DNSFAIL"].get("options", [])), symbols.get("DMARC_DNSFAIL")


def test_outside_test_mail_gets_no_unresolved_name_symbols(container: str) -> None:
    reply = _scan_from(container, "example.org", "mx.example.org")
    symbols = set(reply["symbols"])
    unresolved = sorted(s for s in symbols if "NORES" in s or s in ("HFILTER_HELO_IP_A", "R_SPF_DNSFAIL"))
    assert not unresolved, f"symbols from unresolved names: {unresolved}; all: {sorted(symbols)}"
    # SPF was resolved from the lab data and matched the gateway.
    assert "R_SPF_ALLOW" in symbols, sorted(symbols)
