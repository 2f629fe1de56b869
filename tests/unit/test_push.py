"""qnprov push without a lab: the files it renders, the connection it opens, one host's transaction.

The transaction runs its real shell commands on this machine (:class:`LocalRemote`) in a
temporary directory, with the real check command (``qnprov.policy.milter_cli milter
--check-config`` of this interpreter) and a stand-in ``systemctl`` that records what it was
asked to do.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from qnprov import inventory, paths
from qnprov.policy.milter.blocklist import Block, BlockList
from qnprov.push.apply import push_host
from qnprov.push.blocks import block_plan, unblock_plan
from qnprov.push.files import DesiredFile, PolicyFiles, policy_files, redact, unified_diff
from qnprov.push.remote import MAX_PARALLEL, LocalRemote, connector_data, in_parallel
from qnprov.push.run import target_hosts

LAB = paths.INVENTORIES_DIR / "lab"
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def test_the_lab_is_reached_as_ansible_reaches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QNPROV_STATE_DIR", "/srv/state")
    target = inventory.load(LAB).ssh_target("mail1")
    assert (target.hostname, target.port, target.user, target.become) == ("127.0.0.1", 10022, "deploy", True)
    assert target.key == "/srv/state/ssh/id_ed25519"
    assert (target.known_hosts, target.strict_host_key_checking) == ("/srv/state/ssh/known_hosts", "yes")
    data = connector_data(target)
    assert data["ssh_known_hosts_file"] == "/srv/state/ssh/known_hosts"
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert (data["ssh_allow_agent"], data["ssh_look_for_keys"]) == (False, False)
    assert data["ssh_file_transfer_protocol"] == "scp"  # MaxSessions 2 (os_hardening) refuses SFTP + exec


def test_push_renders_the_roles_files_from_the_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QNPROV_STATE_DIR", "/srv/state")
    files = policy_files(inventory.load(LAB), "mail1")
    by_name = {Path(f.path).name: f for f in files.files}
    # qnprov_milter_overrides defaults to the hosted domains; the lab maps its domain to an agency.
    assert yaml.safe_load(by_name["overrides.yml"].content) == {"local_domains": ["quangninh.test"]}
    assert by_name["agencies.yml"].content == b"'@quangninh.test': SKHCN\n"
    assert by_name["blocklist.yml"].content == b"blocks: []\n"
    assert by_name["blocklist.yml"].create_only and not by_name["overrides.yml"].create_only
    assert {(f.owner, f.group, f.mode) for f in files.files} == {("root", "postfix", "640")}
    assert files.check_argv("/x")[:5] == ["/opt/qnprov/venv/bin/python", "-m", "qnprov.policy.milter_cli",
                                          "milter", "--check-config"]


def test_only_the_mta_group_limited_by_the_pattern() -> None:
    inv = inventory.load(LAB)
    assert target_hosts(inv, None) == ["mail1"]
    assert target_hosts(inv, "mail1") == ["mail1"]
    with pytest.raises(Exception, match=r"no MTA host .* matches --limit nothing"):
        target_hosts(inv, "nothing")


def test_diffs_never_show_a_secret() -> None:
    text = ("bind_pw: hunter2\nrules:\n  api_key: abc\nlimits: {}\n"
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    cleaned = redact(text)
    assert "hunter2" not in cleaned and "abc" not in cleaned and "MIIE" not in cleaned
    assert "limits: {}" in cleaned
    diff = unified_diff("/etc/x.yml", b"password: old-secret\n", b"password: new-secret\n")
    assert "secret" not in diff.replace("-secret", "")  # neither value, only the key
    assert "old-secret" not in diff and "new-secret" not in diff


# --- one host's transaction on this machine -----------------------------------------

@pytest.fixture()
def host(tmp_path: Path) -> tuple[LocalRemote, Path, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    fake = bindir / "systemctl"
    # Records each call; fails "reload" when the file reload-fails exists.
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                    f"if [ \"$1\" = reload ] && [ -e {tmp_path}/reload-fails ]; then exit 1; fi\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    return LocalRemote("local", env), tmp_path / "etc" / "policy", log


def _wanted(policy: Path, overrides: bytes, agencies: bytes = b"{}\n", blocks: bytes = b"blocks: []\n") -> PolicyFiles:
    def file(name: str, content: bytes, **kw: bool) -> DesiredFile:
        return DesiredFile(str(policy / name), content, owner=USER, group=GROUP, **kw)
    return PolicyFiles(policy_dir=str(policy), python=sys.executable, dir_owner=USER, dir_group=GROUP,
                       files=(file("overrides.yml", overrides), file("agencies.yml", agencies),
                              file("blocklist.yml", blocks, create_only=True)))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_push_writes_validates_and_reloads_then_a_second_changes_nothing(host) -> None:  # type: ignore[no-untyped-def]
    remote, policy, log = host
    first = push_host(remote, _wanted(policy, b"local_domains:\n- quangninh.test\n"))
    assert first.status == "changed", first.message
    assert sorted(Path(p).name for p in first.files) == ["agencies.yml", "blocklist.yml", "overrides.yml"]
    assert first.action == "restart"  # the agency map is read at start only, as the role's handler knows
    assert (policy / "overrides.yml").read_bytes() == b"local_domains:\n- quangninh.test\n"
    assert stat.S_IMODE((policy / "overrides.yml").stat().st_mode) == 0o640
    assert stat.S_IMODE(policy.stat().st_mode) == 0o750
    assert not any(p.name.startswith(".policy.qnprov") for p in policy.parent.iterdir())
    second = push_host(remote, _wanted(policy, b"local_domains:\n- quangninh.test\n"))
    assert (second.status, second.files, second.action) == ("unchanged", [], None)
    assert log.read_text().splitlines() == ["restart qnprov-milter", "is-active --quiet qnprov-milter"]
    third = push_host(remote, _wanted(policy, b"local_domains:\n- quangninh.test\n- so.quangninh.test\n"))
    assert (third.status, third.action) == ("changed", "reload")
    assert [Path(p).name for p in third.files] == ["overrides.yml"]


def test_check_shows_the_diff_and_writes_nothing(host) -> None:  # type: ignore[no-untyped-def]
    remote, policy, log = host
    push_host(remote, _wanted(policy, b"local_domains:\n- quangninh.test\n"))
    before = {p.name: _sha(p) for p in policy.iterdir()}
    calls = log.read_text()
    checked = push_host(remote, _wanted(policy, b"local_domains:\n- other.test\n"), check=True)
    assert checked.status == "changed" and checked.action is None
    assert "-- quangninh.test" in checked.diff and "+- other.test" in checked.diff
    assert {p.name: _sha(p) for p in policy.iterdir()} == before
    assert log.read_text() == calls


def test_an_invalid_override_is_refused_and_the_host_keeps_its_files(host) -> None:  # type: ignore[no-untyped-def]
    remote, policy, log = host
    push_host(remote, _wanted(policy, b"local_domains:\n- quangninh.test\n"))
    before = {p.name: _sha(p) for p in policy.iterdir()}
    calls = log.read_text()
    refused = push_host(remote, _wanted(policy, b"failure_verdict: explode\n"))
    assert refused.status == "failed"
    assert "refused by the milter's check" in refused.message and "failure_verdict" in refused.message
    assert {p.name: _sha(p) for p in policy.iterdir()} == before
    assert log.read_text() == calls  # not reloaded
    assert sorted(p.name for p in policy.parent.iterdir()) == ["policy"]  # no stage left behind


def test_a_failed_reload_puts_the_previous_files_back(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, policy, log = host
    push_host(remote, _wanted(policy, b"local_domains:\n- quangninh.test\n"))
    before = _sha(policy / "overrides.yml")
    (tmp_path / "reload-fails").touch()
    failed = push_host(remote, _wanted(policy, b"local_domains:\n- other.test\n"))
    assert failed.status == "failed" and "previous files restored" in failed.message
    assert _sha(policy / "overrides.yml") == before
    assert log.read_text().splitlines()[-2:] == ["reload qnprov-milter", "restart qnprov-milter"]


def test_the_block_list_is_created_once_and_then_owned_by_push_block(host) -> None:  # type: ignore[no-untyped-def]
    remote, policy, _ = host
    wanted = _wanted(policy, b"local_domains:\n- quangninh.test\n")
    push_host(remote, wanted)
    blocked = push_host(remote, block_plan(Block("evil.test", "INC-1"))(remote, wanted))
    assert blocked.status == "changed" and [Path(p).name for p in blocked.files] == ["blocklist.yml"]
    on_host = BlockList.load(policy / "blocklist.yml")
    assert on_host.targets() == ["evil.test"]
    # A policy push (as a deploy) does not lift the block: the file is create-only for them.
    assert push_host(remote, wanted).status == "unchanged"
    assert BlockList.load(policy / "blocklist.yml").targets() == ["evil.test"]
    # Unblocking something that is not blocked changes nothing; unblocking the entry removes it.
    assert push_host(remote, unblock_plan("other.test")(remote, wanted)).status == "unchanged"
    lifted = push_host(remote, unblock_plan("EVIL.test")(remote, wanted))
    assert lifted.status == "changed"
    assert (policy / "blocklist.yml").read_text() == "blocks: []\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qnprov", "push", *args], capture_output=True, text=True,
                          timeout=120, cwd=paths.PROJECT_ROOT, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (("block", "-i", "lab", "x@-bad.example", "--reason", "r"), "domain label '-bad'"),
    (("block", "-i", "lab", "evil.test", "--reason", " "), "--reason must say why"),
    (("block", "-i", "lab", "evil.test", "--reason", "r", "--expires", "soon"), "--expires 'soon'"),
    (("unblock", "-i", "lab"), "name the sender or domain to unblock"),
    (("policy", "-i", "lab", "--limit", "nothing"), "matches --limit nothing"),
])
def test_bad_input_is_refused_before_any_host_is_contacted(args: tuple[str, ...], message: str) -> None:
    # inventories/lab points at 127.0.0.1:10022; a connection attempt would fail differently (exit 1).
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # Ansible may warn about an unmatched pattern first
    assert last.startswith("error: ") and message in last and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_hosts_are_pushed_to_at_the_same_time() -> None:
    """Every host's work runs at once: each waits at a barrier that opens only when all have arrived."""
    hosts = [f"mta{n}" for n in range(5)]
    barrier = threading.Barrier(len(hosts), timeout=10)
    arrived: list[tuple[str, str]] = []

    def work(host: str) -> None:
        arrived.append((host, threading.current_thread().name))
        barrier.wait()  # BrokenBarrierError after 10 s if the hosts were run one after another

    in_parallel(work, hosts)
    assert sorted(h for h, _ in arrived) == hosts
    assert len({thread for _, thread in arrived}) == len(hosts)
    assert all(thread.startswith("qnprov-push") for _, thread in arrived)


def test_a_host_that_raises_does_not_stop_the_others_and_is_raised_at_the_end() -> None:
    done: list[str] = []

    def work(host: str) -> None:
        if host == "bad":
            raise RuntimeError("boom on bad")
        done.append(host)

    with pytest.raises(RuntimeError, match="boom on bad"):
        in_parallel(work, ["a", "bad", "c"])
    assert sorted(done) == ["a", "c"]
    in_parallel(work, [])  # no host, no thread, no error
    assert MAX_PARALLEL == 16
