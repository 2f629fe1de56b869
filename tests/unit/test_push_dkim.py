"""qnprov push dkim rotate without a lab: keys, records, DNS answers, refusals, state, rendering, arguments."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from qnprov import dns as qdns
from qnprov import inventory, paths
from qnprov.errors import InputError
from qnprov.push import dkimhost
from qnprov.push import dkimkeys as dkim

LAB = paths.INVENTORIES_DIR / "lab"
NOW = dt.datetime(2026, 12, 7, 21, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def key() -> bytes:
    return dkim.generate_key(2048)


def test_selectors_are_one_dns_label() -> None:
    assert dkim.check_selector(" S20261207 ") == "s20261207"
    assert dkim.default_selector(NOW) == "s20261207"
    for bad in ("", "a.b", "-x", "x-", "a b", "é", "x" * 64):
        with pytest.raises(InputError, match="is not a DKIM selector"):
            dkim.check_selector(bad)


def test_a_key_is_at_least_2048_bits() -> None:
    with pytest.raises(Exception, match="at least 2048"):
        dkim.generate_key(1024)


def test_the_record_and_the_txt_file_carry_the_keys_public_half(key: bytes) -> None:
    public = dkim.public_b64(key)
    rec = dkim.record("quangninh.test", "s2", public)
    assert rec.name == "s2._domainkey.quangninh.test." and rec.type == "TXT"
    assert rec.value == f"v=DKIM1; k=rsa; p={public}"
    # longer than one TXT string: the zone line splits it into 255-octet strings
    assert len(rec.value) > 255 and rec.zone_line().count('"') == 4
    # the file `qnprov dns records` reads (rspamadm dkim_keygen's shape) gives back the same key
    parsed = qdns.parse_dkim_txt(dkim.txt_file("s2", public).decode())
    assert (parsed.selector, parsed.public_key_b64) == ("s2", public)


def test_a_private_key_is_shown_only_as_a_label(key: bytes) -> None:
    label = dkim.secret_label(key)
    assert label.startswith(f"(secret, {len(key)} bytes, sha256 ") and "PRIVATE" not in label
    assert base64.b64encode(key).decode()[:20] not in label


def _reply(name: str, texts: list[list[bytes]], rcode: int = dns.rcode.NOERROR) -> bytes:
    query = dns.message.from_wire(dkim.dns_query(name))
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for strings in texts:
        quoted = " ".join('"' + s.decode() + '"' for s in strings)
        rrset = reply.find_rrset(reply.answer, dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.TXT,
                                 create=True)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, quoted), 3600)
    return reply.to_wire()


def test_the_query_is_a_recursive_txt_question_and_the_answer_is_read_back() -> None:
    query = dns.message.from_wire(dkim.dns_query("s2._domainkey.quangninh.test."))
    assert query.question[0].rdtype == dns.rdatatype.TXT and query.flags & dns.flags.RD
    assert str(query.question[0].name) == "s2._domainkey.quangninh.test."
    # a TXT value in two strings (a 2048-bit key does not fit one) is joined
    wire = _reply("s2._domainkey.quangninh.test.", [[b"v=DKIM1; k=rsa; ", b"p=ABCD"], [b"v=spf1 -all"]])
    rcode, texts = dkim.parse_txt_answer(wire)
    assert (rcode, sorted(texts)) == (0, ["v=DKIM1; k=rsa; p=ABCD", "v=spf1 -all"])
    assert dkim.parse_txt_answer(_reply("x.quangninh.test.", [], dns.rcode.NXDOMAIN)) == (3, [])
    with pytest.raises(ValueError, match="not the reply"):
        dkim.parse_txt_answer(dkim.dns_query("x.test."))


def test_activation_is_refused_until_the_record_carries_the_key() -> None:
    name = "s2._domainkey.quangninh.test."
    missing = dkim.Lookup(name, "127.0.0.1 (on mail1)", 3)
    message = dkim.refusal("quangninh.test", "s2", missing, "KEY")
    assert message is not None
    assert "selector s2 of quangninh.test is not published yet" in message and name in message
    assert "NXDOMAIN" in message and "127.0.0.1 (on mail1)" in message and "--force" in message
    other = dkim.Lookup(name, "127.0.0.1", 0, ("v=DKIM1; k=rsa; p=OTHERKEY",))
    assert other.verdict("KEY") == "mismatch"
    message = dkim.refusal("quangninh.test", "s2", other, "KEY")
    assert message is not None and "does not match its published record" in message and name in message
    published = dkim.Lookup(name, "127.0.0.1", 0, ("v=DKIM1; k=rsa; p=KEY", "unrelated"))
    assert published.verdict("KEY") == "published" and dkim.refusal("quangninh.test", "s2", published, "KEY") is None
    assert dkim.Lookup(name, "r", 0, ("v=spf1 -all",)).verdict("KEY") == "missing"


def test_the_state_moves_pending_to_active_and_lists_the_old_selector_for_retirement() -> None:
    state = dkim.with_pending(dkim.DkimState(), "quangninh.test", "s2", "ab" * 32, NOW)
    assert state.domains["quangninh.test"].pending == {"selector": "s2", "key_sha256": "ab" * 32,
                                                       "since": "2026-12-07T21:00:00+00:00"}
    assert state.selectors() == {}  # phase 1 changes no signing
    again = dkim.with_pending(state, "quangninh.test", "s2", "ab" * 32, NOW + dt.timedelta(hours=1))
    assert again.dump() == state.dump()  # a rerun is no change
    active = dkim.with_active(state, "quangninh.test", "s2", "qn2026", NOW, 7)
    assert active.selectors() == {"quangninh.test": "s2"}
    assert active.domains["quangninh.test"].pending is None
    assert active.domains["quangninh.test"].retiring == [
        {"selector": "qn2026", "since": "2026-12-07T21:00:00+00:00", "retire_after": "2026-12-14T21:00:00+00:00"}]
    retiring = active.domains["quangninh.test"].retiring
    assert dkim.retirement_due(retiring, NOW + dt.timedelta(days=6)) == []
    assert dkim.retirement_due(retiring, NOW + dt.timedelta(days=7)) == ["qn2026"]
    assert dkim.DkimState.parse(active.dump()).dump() == active.dump()
    with pytest.raises(OSError, match="unreadable"):
        dkim.DkimState.parse(b"{not json")


def test_the_role_reads_the_selector_the_push_writes(tmp_path: Path) -> None:
    """One truth: roles/rspamd's _rspamd_dkim_selectors comes from the state file the push writes."""
    variables = inventory.load(LAB).role_vars("mail1", dkimhost.ROLE_DIR)
    probe = tmp_path / "probe.j2"
    probe.write_text("{{ _rspamd_dkim_selectors | to_json }}")
    state = dkim.with_active(dkim.DkimState(), "quangninh.test", "s2", "qn2026", NOW, 7)
    slurped = {"content": base64.b64encode(state.dump()).decode(), "encoding": "base64"}
    assert json.loads(variables.render(probe, {"__rspamd_dkim_state": slurped})) == {"quangninh.test": "s2"}
    # no state file on the host (slurp failed): every domain keeps rspamd_dkim_selector
    assert json.loads(variables.render(probe, {"__rspamd_dkim_state": {"failed": True}})) == {}


def test_the_signing_files_name_the_active_selector_and_are_unchanged_without_a_rotation() -> None:
    setup = dkimhost.host_dkim(inventory.load(LAB), "mail1")
    assert (setup.dkim_dir, setup.default_selector, setup.retire_after_days) == ("/var/lib/rspamd/dkim", "qn2026", 7)
    assert setup.resolver == "127.0.0.1" and "quangninh.test" in setup.domains
    plain = {rel: setup.variables.render(dkimhost.TEMPLATES / f"{rel}.j2").encode() for rel in dkimhost.SIGNING_FILES}
    assert setup.render_signing({}) == plain  # byte-identical to what the role wrote before any rotation
    rotated = setup.render_signing({"quangninh.test": "s2"})
    for rel in dkimhost.SIGNING_FILES:
        text = rotated[rel].decode()
        assert ('"quangninh.test" {\n    selector = "s2";\n'
                '    path = "/var/lib/rspamd/dkim/quangninh.test.s2.key";') in text, rel
        assert 'selector = "s2"' not in plain[rel].decode()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qnprov", "push", "dkim", "rotate", *args], capture_output=True,
                          text=True, timeout=120, cwd=paths.PROJECT_ROOT, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (("-i", "lab", "--domain", "quangninh.test", "--force"), "--force only goes with --activate"),
    (("-i", "lab", "--domain", "quangninh.test", "--activate", "--selector", "s2"), "--selector names phase 1"),
    (("-i", "lab", "--domain", "quangninh.test", "--selector", "a.b"), "'a.b' is not a DKIM selector"),
    (("-i", "lab", "--domain", "not a domain"), "is not a domain name"),
    (("-i", "lab", "--domain", "other.test"), "other.test is not one of mail1's qnprov_hosted_domains"),
    (("-i", "lab", "--domain", "quangninh.test", "--limit", "nothing"), "matches --limit nothing"),
    # phase 2 on one of lab-ha's two MTAs would leave the other signing with the old selector
    (("-i", "lab-ha", "--domain", "quangninh.test", "--activate", "--limit", "ha1"),
     "--activate switches every MTA that signs for quangninh.test together: --limit ha1 leaves out ha2,"),
    (("-i", "lab-ha", "--domain", "quangninh.test", "--activate", "--limit", "ha2", "--check"),
     "--limit ha2 leaves out ha1,"),
])
def test_bad_input_is_refused_before_any_host_is_contacted(args: tuple[str, ...], message: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_an_activation_limited_to_every_signing_mta_is_not_a_split() -> None:
    from qnprov.push import dkim as push_dkim

    ha = inventory.load(paths.INVENTORIES_DIR / "lab-ha")
    both = {h: dkimhost.host_dkim(ha, h) for h in ("ha1", "ha2")}
    push_dkim._refuse_a_split(ha, "ha1,ha2", "quangninh.test", both)  # every signer is in: no refusal
    with pytest.raises(InputError, match=r"leaves out ha2,"):
        push_dkim._refuse_a_split(ha, "ha1", "quangninh.test", {"ha1": both["ha1"]})


# --- phase 2 on several MTAs: together or not at all --------------------------------
# Each "MTA" is a directory tree on this machine driven through LocalRemote, with
# stand-ins for chown, systemctl and rspamadm, and the role's configtest replaced by a
# script that refuses any candidate under a tree named "bad".

def _mta_trees(tmp_path: Path, names: tuple[str, ...]) -> tuple[dict, dict, dict]:
    import dataclasses

    from qnprov.push.remote import LocalRemote

    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("chown", "systemctl", "rspamadm"):
        (fake / tool).write_text("#!/bin/sh\nexit 0\n")
        (fake / tool).chmod(0o755)
    configtest = fake / "configtest"
    configtest.write_text('#!/bin/sh\ncase "$2" in */bad/*) echo "line 3: broken"; exit 1;; esac\nexit 0\n')
    configtest.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    log: list[tuple[str, str]] = []

    class LoggedRemote(LocalRemote):
        def run(self, command: str):  # type: ignore[no-untyped-def]
            log.append((self.name, command))
            return super().run(command)

    base = dkimhost.host_dkim(inventory.load(LAB), "mail1")
    remotes, setups, states = {}, {}, {}
    for name in names:
        root = tmp_path / name
        (root / "etc" / "local.d").mkdir(parents=True)
        (root / "dkim").mkdir()
        for rel in dkimhost.SIGNING_FILES:
            (root / "etc" / rel).write_text(f"old {rel}\n")
        remotes[name] = LoggedRemote(name, env)
        setups[name] = dataclasses.replace(base, host=name, rspamd_dir=str(root / "etc"), dkim_dir=str(root / "dkim"),
                                           configtest=str(configtest))
        states[name] = dkim.DkimState.parse(None)
    remotes["log"] = log  # the commands of every host, in the order they ran
    return remotes, setups, states


def _tree(tmp_path: Path, name: str) -> dict[str, str]:
    return {str(p.relative_to(tmp_path / name)): p.read_text() for p in sorted((tmp_path / name).rglob("*"))
            if p.is_file()}


def _phase2(remotes: dict, setups: dict, states: dict, *, check: bool = False):
    import time

    from qnprov.push import dkim as push_dkim
    from qnprov.push.run import PushResult

    result = PushResult(command="dkim rotate quangninh.test --activate", check=check)
    hosts = {name: remote for name, remote in remotes.items() if name != "log"}
    return push_dkim._activate_hosts(result, hosts, setups, states, "quangninh.test", "s2", None, NOW, check, None,
                                     time.monotonic(), [])


def test_one_mta_refusing_its_candidates_leaves_every_mta_as_it_was(tmp_path: Path) -> None:
    remotes, setups, states = _mta_trees(tmp_path, ("ha1", "bad"))
    before = {name: _tree(tmp_path, name) for name in setups}
    rotation = _phase2(remotes, setups, states)
    hosts = rotation.result.hosts
    assert hosts["bad"].status == "failed"
    assert hosts["bad"].message.startswith("rspamd configtest refused the new local.d/dkim_signing.conf")
    assert "line 3: broken" in hosts["bad"].message
    assert (hosts["ha1"].status, hosts["ha1"].files, hosts["ha1"].action) == ("unchanged", [], None)
    assert hosts["ha1"].message == ("not switched: bad could not take the new selector, and the MTAs switch "
                                    "together or not at all")
    # nothing published, no state written, no staged file left, on either tree; no reload
    assert {name: _tree(tmp_path, name) for name in setups} == before
    assert not [c for _, c in remotes["log"] if "systemctl reload" in c]


def test_every_mta_accepting_switches_every_mta(tmp_path: Path) -> None:
    remotes, setups, states = _mta_trees(tmp_path, ("ha1", "ha2"))
    rotation = _phase2(remotes, setups, states)
    for name in setups:
        assert rotation.result.hosts[name].status == "changed", rotation.result.hosts[name]
        assert rotation.result.hosts[name].action == "reload"
        tree = _tree(tmp_path, name)
        assert 'selector = "s2"' in tree["etc/local.d/dkim_signing.conf"]
        assert json.loads(tree["dkim/qnprov-dkim.json"])["domains"]["quangninh.test"]["active"] == "s2"
        assert not [path for path in tree if ".qnprov-" in path]  # no staged or previous copy left
    # every host's candidates were validated before any host published one
    log = remotes["log"]
    tests = [i for i, (_, c) in enumerate(log) if c.startswith(str(setups["ha1"].configtest))]
    publishes = [i for i, (_, c) in enumerate(log) if c.startswith("cp -a --") and ".qnprov-prev" in c]
    assert {log[i][0] for i in tests} == {"ha1", "ha2"} and {log[i][0] for i in publishes} == {"ha1", "ha2"}
    assert max(tests) < min(publishes)


def test_a_dry_run_stages_nothing_anywhere(tmp_path: Path) -> None:
    remotes, setups, states = _mta_trees(tmp_path, ("ha1", "ha2"))
    before = {name: _tree(tmp_path, name) for name in setups}
    rotation = _phase2(remotes, setups, states, check=True)
    assert {h: r.message for h, r in rotation.result.hosts.items()} == dict.fromkeys(setups, "would switch signing")
    assert {name: _tree(tmp_path, name) for name in setups} == before
