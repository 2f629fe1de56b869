"""``qnprov store dedupe``: which copies a failover left, and the commands it runs on the store.

The grouping is pure (real ``doveadm -f tab fetch -F`` output text, as read from a lab-ha
store); the shell commands run here under a real ``sh`` with a stand-in ``doveadm`` that
records its arguments, so quoting and the user-list file are what the store would get.
The whole command meets real stores in the lab-ha store-down drill (tests/labha).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qnprov.errors import ExternalError
from qnprov.stores import dedupe

HEADER = "Username\tmailbox-guid\tuid\thdr.message-id\thdr.return-path\thdr.date\tmailbox"
G1, G2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "ffeeddccbbaa99887766554433221100"


def row(user: str, guid: str, uid: int, mid: str, sender: str = "<duclm@quangninh.test>", date: str = "",
        mailbox: str = "INBOX") -> str:
    return "\t".join([user, guid, str(uid), mid, sender, date, mailbox])


def test_a_second_copy_with_the_delivery_scripts_key_is_planned_and_the_first_stays() -> None:
    text = "\n".join([
        HEADER,
        row("annv@quangninh.test", G1, 1336, "<drill-a-00093@quangninh.test>"),
        row("annv@quangninh.test", G1, 1247, "<drill-a-00092@quangninh.test>"),
        row("annv@quangninh.test", G1, 1801, "<drill-a-00093@quangninh.test>"),
        row("binhtt@quangninh.test", G2, 12, "<drill-a-00093@quangninh.test>"),  # another account: its own copy
    ])
    found = dedupe.plan("ha1.quangninh.test", 86400, ["annv@quangninh.test", "binhtt@quangninh.test"], text)
    assert (found.read, found.unparsed, found.accounts) == (4, 0, 2)
    assert found.extra == [dedupe.Copy("annv@quangninh.test", G1, 1801, "<drill-a-00093@quangninh.test>", "INBOX")]
    assert found.summary(applied=False)["copies"] == 1


@pytest.mark.parametrize("other", [
    {"sender": "<someone@example.org>"},   # a stranger who learnt the Message-ID
    {"date": "Mon, 7 Dec 2026 18:00:00 +0700"},  # another message under the same ID
    {"guid": G2, "mailbox": "Archive"},    # the same message filed in another mailbox
])
def test_copies_differ_unless_mailbox_message_id_sender_and_date_all_agree(other: dict[str, str]) -> None:
    first = row("annv@quangninh.test", G1, 5, "<x@y>", date="Mon, 7 Dec 2026 17:00:00 +0700")
    fields = {"guid": G1, "sender": "<duclm@quangninh.test>", "date": "Mon, 7 Dec 2026 17:00:00 +0700",
              "mailbox": "INBOX", **other}
    second = row("annv@quangninh.test", fields["guid"], 9, "<x@y>", fields["sender"], fields["date"],
                 fields["mailbox"])
    assert dedupe.plan("s", 60, ["annv@quangninh.test"], f"{HEADER}\n{first}\n{second}\n").extra == []


def test_a_message_without_message_id_or_a_line_not_read_whole_is_never_a_copy() -> None:
    text = "\n".join([HEADER, row("a@x", G1, 1, ""), row("a@x", G1, 2, ""),
                      "a@x\t" + G1 + "\t3\t<m@x>",  # cut short
                      "a@x\t" + G1 + "\tnot-a-uid\t<m@x>\t<s@x>\t\tINBOX"])
    found = dedupe.plan("s", 60, ["a@x"], text)
    assert (found.read, found.unparsed, found.extra) == (2, 2, [])


def test_unexpected_doveadm_output_is_an_error_and_no_output_is_nothing_to_do() -> None:
    with pytest.raises(ExternalError, match="unexpected doveadm fetch header"):
        dedupe.plan("s", 60, ["a@x"], "username\tuid\n")
    assert dedupe.plan("s", 60, [], "").extra == []


@pytest.fixture()
def fake_doveadm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A ``doveadm`` on PATH that records its arguments and the user file it was given."""
    log = tmp_path / "log"
    tool = tmp_path / "bin" / "doveadm"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done >> "$DOVEADM_LOG"\n'
                    'printf -- "--\\n" >> "$DOVEADM_LOG"\n'
                    'prev=; for a; do [ "$prev" = -F ] && cat "$a" >> "$DOVEADM_LOG"; prev=$a; done\n'
                    'printf "Username\\tmailbox-guid\\n"\n')
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tool.parent}:{os.environ['PATH']}", "DOVEADM_LOG": str(log)}
    return env, log


def test_the_fetch_runs_once_for_every_account_from_a_private_file_hostile_names_included(fake_doveadm) -> None:
    env, log = fake_doveadm
    users = ["annv@quangninh.test", "o'brien@quangninh.test", "x$(touch /tmp/qnprov-pwned)@quangninh.test"]
    proc = subprocess.run(dedupe.fetch_argv(users, 86400), env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    args, _, listed = log.read_text().partition("--\n")
    assert args.splitlines()[:3] == ["-f", "tab", "fetch"]
    assert args.splitlines()[5:] == [" ".join(dedupe.FIELDS), "savedsince", "86400secs"]
    assert listed.splitlines() == users  # each name on its own line, never run by the shell
    assert not Path("/tmp/qnprov-pwned").exists()


def test_the_expunge_names_one_message_by_mailbox_uid_and_message_id_and_replicates_after(fake_doveadm) -> None:
    env, log = fake_doveadm
    copy = dedupe.Copy("annv@quangninh.test", G1, 1801, "<drill-a-00093@quangninh.test>", "INBOX")
    assert dedupe.expunge_argv(copy) == ("doveadm", "expunge", "-u", "annv@quangninh.test", "mailbox-guid", G1,
                                         "uid", "1801", "HEADER", "Message-ID", "<drill-a-00093@quangninh.test>")
    proc = subprocess.run(dedupe.replicate_argv(["a@x", "b c@x"]), env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split("--\n")[:2] == ["replicator\nreplicate\na@x\n", "replicator\nreplicate\nb c@x\n"]


def test_the_store_sends_back_only_the_rows_whose_key_repeats_and_its_count(tmp_path: Path) -> None:
    """The fetch script's awk (run here by the real awk) filters doveadm's table on the store."""
    table = "\n".join([HEADER,
                       row("annv@quangninh.test", G1, 1336, "<m93@x>"),
                       row("annv@quangninh.test", G1, 1247, "<m92@x>"),
                       row("annv@quangninh.test", G1, 1801, "<m93@x>"),
                       row("annv@quangninh.test", G1, 1900, ""),
                       row("annv@quangninh.test", G1, 1901, ""),
                       "annv@quangninh.test\tcut short"]) + "\n"
    tool = tmp_path / "bin" / "doveadm"
    tool.parent.mkdir()
    (tmp_path / "table").write_text(table)
    tool.write_text(f"#!/bin/sh\ncat {tmp_path / 'table'}\n")
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tool.parent}:{os.environ['PATH']}"}
    proc = subprocess.run(dedupe.fetch_argv(["annv@quangninh.test"], 600), env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [HEADER, row("annv@quangninh.test", G1, 1336, "<m93@x>"),
                                        row("annv@quangninh.test", G1, 1801, "<m93@x>"), "#read\t5\t1"]
    found = dedupe.plan("ha1", 600, ["annv@quangninh.test"], proc.stdout)
    assert (found.read, found.unparsed) == (5, 1)
    assert [c.uid for c in found.extra] == [1801]
    # a doveadm that fails fails the command: its output is never taken for "no copies"
    tool.write_text("#!/bin/sh\necho 'Error: userdb lookup failed' >&2\nexit 75\n")
    failed = subprocess.run(dedupe.fetch_argv(["annv@quangninh.test"], 600), env=env, capture_output=True,
                            text=True, check=False)
    assert failed.returncode == 75 and failed.stdout == ""
