"""Collapse the second copies that a store failover can leave (``qnprov store dedupe``).

SMTP and LMTP deliver at least once. When a store stops after its LMTP saved a message
but before its reply reached the MTA, the MTA delivers the message again; the store's
``sieve_before`` script (qnprov-duplicates.sieve) discards that second copy when it comes
back to the same store. After a failover it does not: the retry lands on the replica,
whose duplicate database (a file in each home, not replicated by dsync) never saw the
first copy, and once the stores resync the mailbox holds both. The same happens to a
message an MTA queued while it stopped, after its client sent it again elsewhere.

This is the runbook's last step after ``store failback``, once the MTAs' queues are
empty: on STORE, for every account it holds, the messages saved in the last ``window``
seconds are read (``doveadm fetch``, one run for all of them) and grouped by the very
key the delivery script uses, Message-ID with envelope sender (``Return-Path``) and
``Date``, per mailbox. In each group the first copy (lowest UID) stays; the others are
expunged one by one, each by its mailbox GUID and UID *and* its Message-ID, so a message
that changed in between is never touched. A message without a Message-ID is never a
copy. The accounts touched are then queued for replication, so the replica loses the
copies too (a ``doveadm expunge`` does not notify the replicator itself).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from qnprov.errors import ExternalError

FIELDS = ("mailbox-guid", "uid", "hdr.message-id", "hdr.return-path", "hdr.date", "mailbox")
DEFAULT_WINDOW = 86400  # seconds: a failover's copies are this recent at most, at failback
MAX_WINDOW = 432000     # the delivery script's own memory (dovecot_duplicate_period_seconds)
# One doveadm run for every account: the user list goes through a private temporary file
# (doveadm -F), the accounts as positional arguments (never parsed by the shell). Only the
# rows whose key occurs more than once come back (two passes of awk over doveadm's output,
# on the store), then one "#read" line: the rows read whole, and the others.
_AWK = r"""
FNR == NR { if (FNR > 1 && NF == 7 && $3 ~ /^[0-9]+$/ && $4 != "") n[$1 FS $2 FS $4 FS $5 FS $6]++; next }
FNR == 1 { print; next }
NF == 7 && $3 ~ /^[0-9]+$/ { total++; if ($4 != "" && n[$1 FS $2 FS $4 FS $5 FS $6] > 1) print; next }
{ bad++ }
END { printf "#read\t%d\t%d\n", total, bad }
"""
FETCH_SCRIPT = ('w=$1; shift; d=$(mktemp -d) || exit 1; trap \'rm -rf "$d"\' EXIT; '
                'printf "%s\\n" "$@" > "$d/users"; '
                'doveadm -f tab fetch -F "$d/users" "' + " ".join(FIELDS) + '" savedsince "${w}secs" '
                '> "$d/out" || exit $?; '
                "awk -F '\\t' '" + _AWK + "' \"$d/out\" \"$d/out\"")


@dataclass(frozen=True)
class Copy:
    user: str
    mailbox_guid: str
    uid: int
    message_id: str
    mailbox: str


@dataclass
class DedupePlan:
    store: str
    window: int
    accounts: int
    read: int = 0
    unparsed: int = 0
    extra: list[Copy] = field(default_factory=list)

    def summary(self, *, applied: bool, removed: int = 0) -> dict[str, object]:
        return {"command": "dedupe", "store": self.store, "window_seconds": self.window,
                "accounts": self.accounts, "messages_read": self.read, "unparsed_lines": self.unparsed,
                "copies": len(self.extra), "removed": removed, "applied": applied,
                "messages": [{"user": c.user, "mailbox": c.mailbox, "uid": c.uid, "message_id": c.message_id}
                             for c in self.extra]}


def fetch_argv(users: list[str], window: int) -> tuple[str, ...]:
    return ("sh", "-c", FETCH_SCRIPT, "qnprov-dedupe", str(int(window)), *users)


def expunge_argv(copy: Copy) -> tuple[str, ...]:
    return ("doveadm", "expunge", "-u", copy.user, "mailbox-guid", copy.mailbox_guid, "uid", str(copy.uid),
            "HEADER", "Message-ID", copy.message_id)


def replicate_argv(users: list[str]) -> tuple[str, ...]:
    """Ask the store's replicator to sync these accounts now (a doveadm expunge does not
    notify it), so the replica loses the copies too."""
    return ("sh", "-c", 'for u; do doveadm replicator replicate "$u" || exit 1; done', "qnprov-dedupe", *users)


def plan(store: str, window: int, users: list[str], fetched: str) -> DedupePlan:
    """The copies to expunge from ``doveadm -f tab fetch -F`` output (``Username`` first)."""
    result = DedupePlan(store, window, len(users))
    lines = []
    store_count: tuple[int, int] | None = None  # the store's own count of what it compared
    for line in fetched.splitlines():
        if line.startswith("#read\t"):
            counts = line.split("\t")[1:]
            store_count = (int(counts[0]), int(counts[1])) if len(counts) == 2 else (0, 0)
        elif line.strip():
            lines.append(line)
    if store_count is not None:  # the store filtered: its count covers every row, not only these
        result.read, result.unparsed = store_count
    if not lines:
        return result
    header = lines[0].split("\t")
    if [h.lower() for h in header] != ["username", *FIELDS]:
        raise ExternalError(f"unexpected doveadm fetch header: {lines[0][:160]!r}")
    groups: dict[tuple[str, str, str, str, str], list[Copy]] = defaultdict(list)
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) != len(header) or not parts[2].isdigit():
            result.unparsed += store_count is None  # never a copy: only what is read whole is compared
            continue
        user, guid, uid, mid, sender, date, mailbox = parts
        result.read += store_count is None
        if not mid.strip():
            continue
        groups[(user.lower(), guid, mid.strip(), sender.strip(), date.strip())].append(
            Copy(user, guid, int(uid), mid.strip(), mailbox))
    for copies in groups.values():
        copies.sort(key=lambda c: c.uid)
        result.extra.extend(copies[1:])
    result.extra.sort(key=lambda c: (c.user, c.mailbox, c.uid))
    return result
