"""``qnprov push block`` / ``unblock``: the emergency block list on every MTA.

Each host's own ``blocklist.yml`` is read, changed (one entry added or replaced, or
removed) and pushed through the same staged, validated, reloaded transaction as the
policy, so hosts that disagreed before a block still each keep their other entries. The
entry is checked (:func:`qnprov.policy.milter.blocklist.new_block`) before any host is
contacted: a malformed sender or domain changes nothing anywhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import PurePosixPath

from qnprov.errors import ConfigError
from qnprov.policy.milter.blocklist import Block, BlockList, parse_target
from qnprov.push.apply import read_file
from qnprov.push.files import BLOCKLIST, PolicyFiles
from qnprov.push.remote import Remote
from qnprov.push.run import Plan


def _host_list(remote: Remote, files: PolicyFiles) -> tuple[bytes | None, BlockList]:
    path = f"{files.policy_dir}/{BLOCKLIST}"
    text = read_file(remote, path)
    if text is None:
        return None, BlockList()
    try:
        return text, BlockList.parse(text.decode("utf-8"), f"{remote.name}:{PurePosixPath(path)}")
    except (ConfigError, UnicodeDecodeError) as exc:
        raise OSError(f"the host's block list is unreadable, nothing changed: {exc}") from None


def block_plan(block: Block) -> Plan:
    def plan(remote: Remote, files: PolicyFiles) -> PolicyFiles:
        _, current = _host_list(remote, files)
        return files.with_blocklist(current.with_block(block).dump().encode("utf-8"))
    return plan


def unblock_plan(target: str | None, *, expired: bool = False, now: dt.datetime | None = None) -> Plan:
    """Remove ``target`` (normalised like ``block``), or with ``expired`` every expired entry."""
    normal = parse_target(target) if target else None

    def plan(remote: Remote, files: PolicyFiles) -> PolicyFiles:
        raw, current = _host_list(remote, files)
        kept = current
        if normal is not None:
            kept = kept.without(normal)
        if expired:
            moment = now or dt.datetime.now(dt.UTC)
            kept = BlockList(tuple(kept.active(moment)))
        if kept == current and raw is not None:
            return files.with_blocklist(raw)  # nothing to remove: the same bytes, no change
        return files.with_blocklist(kept.dump().encode("utf-8"))
    return plan
