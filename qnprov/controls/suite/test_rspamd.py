"""rspamd controls: DKIM keys, signing, inbound checks, privacy, sockets, config."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qnprov.controls import hoststate
from qnprov.controls.probes import ProbeError
from qnprov.controls.suite.conftest import Facts, file_facts, run
from qnprov.controls.target import VerifyTarget

DKIM_DIR = "/var/lib/rspamd/dkim"
MIN_DKIM_BITS = 2048
RSPAMD_PORTS = (11332, 11333, 11334)


def _dkim_keys(host: Any) -> list[str]:
    keys = run(host, f"find {DKIM_DIR} -maxdepth 1 -name '*.key' -type f", ok=(0, 1)).split()
    if not keys:
        raise ProbeError(f"no DKIM keys in {DKIM_DIR}")
    return sorted(keys)


@pytest.mark.control("QN-RSP-01")
def test_dkim_keys_strong_and_private(host: Any, record_property: Any) -> None:
    problems = []
    sizes = {}
    for key in _dkim_keys(host):
        if not re.fullmatch(r"/[A-Za-z0-9_./\-]+", key):
            raise ProbeError(f"unexpected key path {key!r}")
        facts = file_facts(host, key)
        if facts["mode"] not in (0o600, 0o400) or facts["user"] not in ("_rspamd", "rspamd", "root"):
            problems.append(f"{key} {facts['user']}:{facts['group']} {facts['mode']:04o}")
        # Only the public half is printed, so the private key never appears in output.
        text = run(host, f"sh -c 'openssl pkey -in {key} -pubout | openssl pkey -pubin -noout -text'")
        _, bits = hoststate.parse_openssl_key_bits(text)
        sizes[key] = bits
        if bits < MIN_DKIM_BITS:
            problems.append(f"{key} is {bits} bits")
    record_property("dkim_key_bits", sizes)
    assert not problems, f"DKIM keys must be ≥ {MIN_DKIM_BITS} bits and 0600: {problems}"


@pytest.mark.control("QN-RSP-02")
def test_dkim_signing_for_hosted_domains(host: Any, facts: Facts, target: VerifyTarget) -> None:
    keys = _dkim_keys(host)
    domains = target.hosted_domains or [target.domain]
    unsigned = [d for d in domains if not any(k.rsplit("/", 1)[-1].startswith(f"{d}.") for k in keys)]
    assert not unsigned, f"no DKIM key for hosted domain(s) {unsigned} in {DKIM_DIR}"
    config = facts["rspamd dkim_signing"]
    assert DKIM_DIR in config, f"dkim_signing does not use the keys in {DKIM_DIR}"
    assert not re.search(r"^\s*enabled\s*=\s*false", config, re.MULTILINE), "dkim_signing is disabled"


@pytest.fixture(scope="module")
def modules(facts: Facts) -> dict[str, set[str]]:
    states = hoststate.parse_rspamd_module_states(facts["rspamd modules"])
    if not states.get("enabled"):
        raise ProbeError("could not read rspamd's module states (rspamadm configdump -m)")
    return states


@pytest.mark.control("QN-RSP-03")
def test_inbound_auth_checks_enabled(modules: dict[str, set[str]]) -> None:
    missing = {"spf", "dkim", "dmarc"} - modules["enabled"]
    assert not missing, f"rspamd modules not enabled: {sorted(missing)}"


@pytest.mark.control("QN-RSP-04")
def test_no_third_party_fuzzy(host: Any, modules: dict[str, set[str]]) -> None:
    known = modules["enabled"] | modules.get("disabled", set())
    assert "fuzzy_check" in known, "rspamd reports no state for fuzzy_check"
    third_party: list[str] = []
    if "fuzzy_check" in modules["enabled"]:
        # Off, the module's default rule (rspamd.com servers) stays inert; on, check where it sends.
        fuzzy = run(host, "rspamadm configdump fuzzy_check")
        servers = re.findall(r"servers\s*=\s*\"?([^\";\n]+)", fuzzy)
        third_party = [s for s in servers if "rspamd.com" in s]
    assert not third_party, f"message hashes would be sent to {third_party}"


@pytest.mark.control("QN-RSP-05")
def test_workers_loopback_only(tcp_listeners: list[hoststate.Listener]) -> None:
    workers = [lst for lst in tcp_listeners if lst.process.startswith("rspamd") or lst.port in RSPAMD_PORTS]
    assert workers, "rspamd is not listening (is it running?)"
    exposed = [f"{lst.address}:{lst.port}" for lst in workers if not lst.loopback]
    assert not exposed, f"rspamd listens beyond loopback: {exposed}"


@pytest.mark.control("QN-RSP-06")
def test_configtest_clean(host: Any) -> None:
    if host.run("command -v rspamadm").rc != 0:
        raise ProbeError("rspamd is not installed (no rspamadm)")
    result = host.run("timeout 60 rspamadm configtest")
    output = (result.stdout + result.stderr).strip()
    assert result.rc == 0 and "syntax OK" in result.stdout, f"rspamadm configtest: {output[:600]}"


@pytest.mark.control("QN-RSP-07")
def test_no_message_rewrite(facts: Facts) -> None:
    actions = facts["rspamd actions"]
    rewrite = re.search(r"rewrite_subject\s*=\s*([^;\n]+)", actions)
    assert rewrite is None or rewrite.group(1).strip().strip('"') in ("null", "none", ""), (
        f"rewrite_subject is set ({rewrite.group(1).strip() if rewrite else ''}): a rewritten message "
        "breaks its sender's digital signature"
    )
