"""The postfix role's one-invocation probe of every staged LDAP map (issue 15).

The role used to run one postmap task per map; now one shell script queries them all.
These run that very script (from roles/postfix/vars/main.yml) against a stand-in
postmap whose answer per map is written in the staged map file, and check that each
map is judged as the per-map task judged it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

VARS = Path(__file__).resolve().parents[2] / "roles" / "postfix" / "vars" / "main.yml"
SCRIPT = yaml.safe_load(VARS.read_text(encoding="utf-8"))["__postfix_ldap_probe_script"]

# The stand-in: checks its arguments like postmap -c DIR -q KEY ldap:FILE, then exits and
# writes to stderr what the map file says (first line: exit status, rest: the message).
FAKE_POSTMAP = """#!/bin/sh
[ "$1" = -c ] && [ "$3" = -q ] || { echo "bad arguments: $*" >&2; exit 9; }
[ "$4" = "postmaster@quangninh.test" ] || { echo "bad key: $4" >&2; exit 9; }
file="${5#ldap:}"
rc=$(head -n1 "$file"); msg=$(tail -n +2 "$file")
[ -n "$msg" ] && printf '%s\\n' "$msg" >&2
echo "some result"
exit "$rc"
"""


def probe(tmp_path: Path, maps: dict[str, str]) -> subprocess.CompletedProcess[str]:
    postmap = tmp_path / "postmap"
    postmap.write_text(FAKE_POSTMAP)
    postmap.chmod(0o755)
    staging = tmp_path / "staging"
    (staging / "ldap").mkdir(parents=True)
    for name, answer in maps.items():
        (staging / "ldap" / f"{name}.cf").write_text(answer)
    return subprocess.run(["/bin/sh", "-c", SCRIPT, "probe", str(postmap), str(staging), "quangninh.test", *maps],
                          capture_output=True, text=True, timeout=30, check=False)


def test_found_and_not_found_pass(tmp_path: Path) -> None:
    proc = probe(tmp_path, {"virtual_domains": "0\n", "virtual_aliases": "1\n"})
    assert (proc.returncode, proc.stderr) == (0, "")


def test_an_unreachable_directory_passes(tmp_path: Path) -> None:
    proc = probe(tmp_path, {"virtual_domains": "1\npostmap: warning: dict_ldap_connect: Unable to bind to "
                                                "server ldap://ldap1 with dn cn=postfix: -1 (Can't contact "
                                                "LDAP server)\n"})
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize(("answer", "why"), [
    ("1\npostmap: warning: dict_ldap_connect: Unable to bind to server ldap://127.0.0.1 with dn "
     "cn=postfix,ou=services,dc=quangninh,dc=test: 49 (Invalid credentials)\n", "Invalid credentials"),
    ("0\npostmap: warning: ldap_tls: certificate verify failed\n", "certificate verify failed"),
    ("75\n", "postmap exit 75"),
    ("2\npostmap: fatal: Can't contact LDAP server\n", "postmap exit 2"),  # a fatal exit fails whatever it says
])
def test_a_failing_map_fails_the_probe_and_is_named(tmp_path: Path, answer: str, why: str) -> None:
    proc = probe(tmp_path, {"virtual_domains": "0\n", "sender_login": answer, "virtual_groups": "1\n"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("sender_login.cf: postmap exit "), proc.stderr
    assert why in proc.stderr
    assert "virtual_domains" not in proc.stderr and "virtual_groups" not in proc.stderr


def test_every_failing_map_is_named(tmp_path: Path) -> None:
    proc = probe(tmp_path, {"virtual_domains": "3\n", "virtual_mailboxes": "0\n", "sender_login": "4\n"})
    assert proc.returncode == 1
    assert [line.split(":")[0] for line in proc.stderr.splitlines()] == ["virtual_domains.cf", "sender_login.cf"]
