"""One host's push: compare, stage, validate, publish, reload; roll back on any failure.

The discipline of the roles' ``validate:`` and handlers, as one transaction per host:

1. **compare**: owner, group, mode and sha256 of every managed file, in one command;
   nothing else happens on a host where everything matches (no reload either);
2. **stage**: a copy of the policy directory (``.policy.qnprov-new`` beside it) gets the
   new files; the live directory is untouched;
3. **validate**: the role's own check command (``qnprov.policy.milter_cli milter
   --check-config``) on the staged files; a refusal removes the stage and the host keeps
   its running files;
4. **publish**: two renames swap the staged directory in (the old one kept as
   ``.policy.qnprov-prev``), then the check runs again on the live path;
5. **reload**: ``systemctl reload qnprov-milter`` (SIGHUP: open SMTP sessions stay), or a
   restart when the agency map changed (the milter reads it only at start, as the role's
   handler knows); the service must be active afterwards.

A failure in 4 or 5 swaps the previous directory back (and reloads it), so a host is left
on its previous, working files. ``--check`` stops after 1 and shows redacted diffs.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from shlex import quote as _q
from typing import Any

from qnprov.push.files import AGENCIES, DesiredFile, PolicyFiles, unified_diff
from qnprov.push.remote import Remote, tail

SERVICE = "qnprov-milter"


@dataclass
class HostResult:
    host: str
    status: str  # "changed", "unchanged", "failed"; with check: "would change" is "changed"
    files: list[str] = field(default_factory=list)
    message: str = ""
    diff: str = ""
    action: str | None = None  # "reload" or "restart" when the milter was told
    seconds: float = 0.0
    began: float = 0.0  # seconds from the push's start to this host's transaction (qnprov.push.run)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status, "changed_files": self.files, "message": self.message,
                               "action": self.action, "seconds": round(self.seconds, 3),
                               "began_after_seconds": round(self.began, 3)}
        if self.diff:
            doc["diff"] = self.diff  # --check / --diff only, redacted
        return doc


def current_state(remote: Remote, paths: list[str]) -> dict[str, tuple[str, str] | None]:
    """``owner:group:mode`` and sha256 of each path (None when missing), in one command."""
    script = "; ".join(
        f"if [ -f {_q(p)} ]; then printf '%s %s\\n' \"$(stat -c '%U:%G:%a' -- {_q(p)})\" "
        f"\"$(sha256sum -- {_q(p)} | cut -d' ' -f1)\"; else echo missing; fi" for p in paths)
    ran = remote.run(script)
    if not ran.ok:
        raise OSError(f"cannot read the managed files: {tail(ran.stderr or ran.stdout)}")
    lines = ran.stdout.splitlines()
    if len(lines) != len(paths):
        raise OSError(f"unexpected answer reading the managed files: {tail(ran.stdout)}")
    found: dict[str, tuple[str, str] | None] = {}
    for path, line in zip(paths, lines, strict=True):
        found[path] = None if line == "missing" else (line.split(" ")[0], line.split(" ")[1])
    return found


def needs_write(wanted: DesiredFile, state: tuple[str, str] | None) -> bool:
    if state is None:
        return True
    if wanted.create_only:
        return False
    return state != (f"{wanted.owner}:{wanted.group}:{wanted.mode}", wanted.sha256)


def read_file(remote: Remote, path: str) -> bytes | None:
    ran = remote.run(f"if [ -f {_q(path)} ]; then base64 -w0 -- {_q(path)}; else echo missing; fi")
    if not ran.ok or ran.stdout.strip() == "missing":
        return None
    return base64.b64decode(ran.stdout.strip())


def _check(remote: Remote, argv: list[str]) -> tuple[bool, str]:
    ran = remote.run(" ".join(_q(a) for a in argv) + " 2>&1")
    return ran.ok, tail(ran.stdout + ran.stderr)


def push_host(remote: Remote, wanted: PolicyFiles, *, check: bool = False, diff: bool = False) -> HostResult:
    """Bring one host's policy files to ``wanted``; see the module docstring for the steps."""
    started = time.monotonic()
    result = HostResult(remote.name, "unchanged")
    try:
        _push(remote, wanted, result, check=check, diff=diff)
    except OSError as exc:
        result.status, result.message = "failed", str(exc)
    result.seconds = time.monotonic() - started
    return result


def _push(remote: Remote, wanted: PolicyFiles, result: HostResult, *, check: bool, diff: bool) -> None:
    every = list(wanted.files) + list(wanted.anchors)
    state = current_state(remote, [f.path for f in every])
    changed = [f for f in every if needs_write(f, state[f.path])]
    result.files = [f.path for f in changed]
    if not changed:
        return
    result.status = "changed"
    if check or diff:
        result.diff = "".join(unified_diff(f.path, read_file(remote, f.path), f.content) for f in changed)
    if check:
        result.message = "would change"
        return
    anchors = [f for f in changed if f in wanted.anchors]
    policy = [f for f in changed if f not in wanted.anchors]
    live = wanted.policy_dir
    stage, prev = staged_name(live), staged_name(live, "prev")
    if policy:
        _stage(remote, wanted, policy, stage, prev)
        ok, output = _check(remote, wanted.check_argv(stage))
        if not ok:
            remote.run(f"rm -rf -- {_q(stage)}")
            raise OSError(f"refused by the milter's check, the running files were kept: {output}")
    for anchor in anchors:
        _install_anchor(remote, wanted.anchors_dir, anchor)
    if policy:
        ran = remote.run(f"if [ -d {_q(live)} ]; then mv -- {_q(live)} {_q(prev)}; fi && mv -- {_q(stage)} {_q(live)}")
        if not ran.ok:
            _roll_back(remote, live, prev)
            raise OSError(f"publishing failed, previous files restored: {tail(ran.stderr)}")
        ok, output = _check(remote, wanted.check_argv(live))
        if not ok:
            _roll_back(remote, live, prev)
            raise OSError(f"the published files failed the check, previous files restored: {output}")
    result.action = "restart" if any(PurePosixPath(f.path).name == AGENCIES for f in policy) else "reload"
    ran = remote.run(f"systemctl {result.action} {SERVICE} && systemctl is-active --quiet {SERVICE}")
    if not ran.ok:
        if policy:
            _roll_back(remote, live, prev)
            remote.run(f"systemctl restart {SERVICE}")
        raise OSError(f"{SERVICE} {result.action} failed, previous files restored: {tail(ran.stderr or ran.stdout)}")
    remote.run(f"rm -rf -- {_q(prev)}")
    result.message = f"{len(changed)} file(s) written, milter {result.action}ed"


def _stage(remote: Remote, wanted: PolicyFiles, files: list[DesiredFile], stage: str, prev: str) -> None:
    live = wanted.policy_dir
    owner = f"{wanted.dir_owner}:{wanted.dir_group}"
    ran = remote.run(
        f"rm -rf -- {_q(stage)} {_q(prev)} && mkdir -p -- {_q(str(PurePosixPath(live).parent))}"
        f" && if [ -d {_q(live)} ]; then cp -a -- {_q(live)} {_q(stage)}; else mkdir -m 0750 -- {_q(stage)}; fi"
        f" && chown {owner} -- {_q(stage)} && chmod 0750 -- {_q(stage)}")
    if not ran.ok:
        raise OSError(f"cannot stage the policy directory: {tail(ran.stderr)}")
    subdirs = sorted({str(PurePosixPath(f.path).parent) for f in files} - {live})
    if subdirs:
        staged = [stage + d[len(live):] for d in subdirs]
        remote.run(" && ".join(f"mkdir -p -- {_q(d)} && chown {owner} -- {_q(d)} && chmod 0750 -- {_q(d)}"
                               for d in staged))
    for wanted_file in files:
        remote.put(wanted_file.content, stage + wanted_file.path[len(live):])
    staged_paths = [(w, _q(stage + w.path[len(live):])) for w in files]
    ran = remote.run(" && ".join(f"chown {w.owner}:{w.group} -- {p} && chmod 0{w.mode} -- {p}"
                                 for w, p in staged_paths))
    if not ran.ok:
        remote.run(f"rm -rf -- {_q(stage)}")
        raise OSError(f"cannot set owner and mode of the staged files: {tail(ran.stderr)}")


def _install_anchor(remote: Remote, directory: str, anchor: DesiredFile) -> None:
    remote.run(f"mkdir -p -- {_q(directory)}")
    install_file(remote, anchor.path, anchor.content, anchor.owner, anchor.group, anchor.mode)


def staged_name(path: str, suffix: str = "new") -> str:
    """Where a file is staged (``new``) or its previous content kept (``prev``): ``.NAME.qnprov-SUFFIX`` beside it."""
    p = PurePosixPath(path)
    return f"{p.parent}/.{p.name}.qnprov-{suffix}"


def stage_file(remote: Remote, path: str, content: bytes, owner: str, group: str, mode: str, *,
               secret: bool = False) -> str:
    """``content`` written to :func:`staged_name` of ``path``, created 0600 before a byte is in it (a key
    goes through :meth:`Remote.put_secret`), then given its owner and mode; the staged path. On a
    failure the staged file is removed and OSError raised."""
    staged = _q(staged_name(path))
    ran = remote.run(f"rm -f -- {staged} && install -m 0600 /dev/null {staged}")
    if not ran.ok:
        raise OSError(f"cannot stage {path}: {tail(ran.stderr)}")
    if secret:
        remote.put_secret(content, staged_name(path))
    else:
        remote.put(content, staged_name(path))
    ran = remote.run(f"chown {owner}:{group} -- {staged} && chmod 0{mode} -- {staged}")
    if not ran.ok:
        remote.run(f"rm -f -- {staged}")
        raise OSError(f"cannot set owner and mode of {staged_name(path)}: {tail(ran.stderr)}")
    return staged_name(path)


def install_file(remote: Remote, path: str, content: bytes, owner: str, group: str, mode: str, *,
                 secret: bool = False) -> None:
    """:func:`stage_file`, then renamed over ``path`` (readers see the old file or the new one, whole)."""
    staged = _q(stage_file(remote, path, content, owner, group, mode, secret=secret))
    ran = remote.run(f"mv -f -- {staged} {_q(path)}")
    if not ran.ok:
        remote.run(f"rm -f -- {staged}")
        raise OSError(f"cannot install {path}: {tail(ran.stderr)}")


def _roll_back(remote: Remote, live: str, prev: str) -> None:
    remote.run(f"if [ -d {_q(prev)} ]; then rm -rf -- {_q(live)} && mv -- {_q(prev)} {_q(live)}; fi")
