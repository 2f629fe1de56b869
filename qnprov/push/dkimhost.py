"""One MTA's side of a DKIM rotation: its variables, its resolver, its keys, its rspamd switch.

:class:`HostDkim` holds what ``roles/rspamd`` (and ``roles/resolver``) say about the host,
rendered by the same templar; the functions run the steps of :mod:`qnprov.push.dkim` on
one host through a :class:`qnprov.push.remote.Remote`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from shlex import quote as q

from qnprov import paths
from qnprov.inventory import Inventory, RoleVars
from qnprov.push.apply import (
    HostResult,
    current_state,
    install_file,
    read_file,
    stage_file,
    staged_name,
    unified_diff,
)
from qnprov.push.dkimkeys import STATE_NAME, DkimState, Lookup, dns_query, parse_txt_answer, record_name
from qnprov.push.remote import Remote, tail

ROLE_DIR = paths.ROLES_DIR / "rspamd"
TEMPLATES = paths.TEMPLATES_DIR / "rspamd"
RESOLVER_ROLE_DIR = paths.ROLES_DIR / "resolver"
#: The rspamd files that name the signing selector (roles/rspamd/tasks/config.yml).
SIGNING_FILES = ("local.d/dkim_signing.conf", "local.d/arc.conf")
CONFIGTEST = "/usr/local/sbin/qnprov-rspamd-configtest"
KEY_OWNER = "_rspamd"
#: Sends one DNS query (wire format, base64 on stdin) over UDP to the address given; base64 reply.
_QUERY = ("import base64,socket,sys;a=sys.argv[1];f=socket.AF_INET6 if ':' in a else socket.AF_INET;"
          "s=socket.socket(f,socket.SOCK_DGRAM);s.settimeout(5);"
          "s.sendto(base64.b64decode(sys.stdin.read()),(a,53));print(base64.b64encode(s.recv(65535)).decode())")


@dataclass(frozen=True)
class HostDkim:
    """What the role's variables say about one MTA's DKIM setup."""

    host: str
    variables: RoleVars
    dkim_dir: str
    default_selector: str
    bits: int
    domains: tuple[str, ...]
    strict: bool
    retire_after_days: int
    resolver: str | None
    rspamd_dir: str = "/etc/rspamd"
    configtest: str = CONFIGTEST

    def signing_path(self, rel: str) -> str:
        return f"{self.rspamd_dir}/{rel}"

    @property
    def state_path(self) -> str:
        return f"{self.dkim_dir}/{STATE_NAME}"

    def key_path(self, domain: str, selector: str) -> str:
        return f"{self.dkim_dir}/{domain}.{selector}.key"

    def txt_path(self, domain: str, selector: str) -> str:
        return f"{self.dkim_dir}/{domain}.{selector}.txt"

    def render_signing(self, selectors: Mapping[str, str]) -> dict[str, bytes]:
        return {rel: self.variables.render(TEMPLATES / f"{rel}.j2", {"_rspamd_dkim_selectors": dict(selectors)})
                .encode("utf-8") for rel in SIGNING_FILES}


def host_dkim(inventory: Inventory, host: str) -> HostDkim:
    variables = inventory.role_vars(host, ROLE_DIR)
    # playbooks/site.yml gives every host roles/resolver: its first loopback address answers for
    # the host (and, in the lab, holds the lab zone); without it, the host's /etc/resolv.conf.
    resolver = None
    resolver_vars = inventory.role_vars(host, RESOLVER_ROLE_DIR)
    if resolver_vars.value("resolver_enabled"):
        resolver = str((resolver_vars.value("resolver_interfaces") or [""])[0]) or None
    return HostDkim(host=host, variables=variables, dkim_dir=str(variables.value("rspamd_dkim_dir")).rstrip("/"),
                    default_selector=str(variables.value("rspamd_dkim_selector")),
                    bits=int(variables.value("rspamd_dkim_key_bits")),
                    domains=tuple(str(d) for d in variables.value("qnprov_hosted_domains") or []),
                    strict=bool(variables.value("rspamd_configtest_strict")),
                    retire_after_days=int(variables.value("rspamd_dkim_retire_after_days")), resolver=resolver)


def lookup(remote: Remote, setup: HostDkim, domain: str, selector: str) -> Lookup:
    """The selector's TXT record, asked of the host's own resolver from the host itself."""
    name = record_name(domain, selector)
    resolver = setup.resolver
    if not resolver:
        ran = remote.run("awk '$1 == \"nameserver\" {print $2; exit}' /etc/resolv.conf")
        resolver = ran.stdout.strip() if ran.ok else ""
    if not resolver:
        raise OSError(f"{remote.name}: no resolver (resolver_interfaces, /etc/resolv.conf) to look {name} up")
    query = base64.b64encode(dns_query(name)).decode("ascii")
    ran = remote.run(f"printf %s {q(query)} | python3 -c {q(_QUERY)} {q(resolver)}")
    if not ran.ok:
        raise OSError(f"{remote.name}: the lookup of {name} through {resolver} failed: {tail(ran.stderr)}")
    rcode, texts = parse_txt_answer(base64.b64decode(ran.stdout.strip()))
    return Lookup(name, f"{resolver} (on {remote.name})", rcode, tuple(texts))


def host_public_key(remote: Remote, key_path: str) -> str | None:
    """The ``p=`` of a key on the host, computed there (the private key stays on the host)."""
    ran = remote.run(f"if [ -f {q(key_path)} ]; then openssl pkey -in {q(key_path)} -pubout -outform DER "
                     f"| base64 -w0; else echo missing; fi")
    if not ran.ok:
        raise OSError(f"{remote.name}: cannot read the public key of {key_path}: {tail(ran.stderr)}")
    return None if ran.stdout.strip() == "missing" else ran.stdout.strip()


def stage_signing(remote: Remote, setup: HostDkim, files: Mapping[str, tuple[str, bytes]]) -> dict[str, str]:
    """Stage each candidate beside its live file and validate it with the role's configtest
    (the candidate in a copy of the live tree); the staged paths. Nothing live changes: on a
    refusal every staged file is removed and OSError raised."""
    strict = " -s" if setup.strict else ""
    staged: dict[str, str] = {}
    try:
        for path, (_, content) in files.items():
            staged[path] = stage_file(remote, path, content, "root", KEY_OWNER, "640")
        for path, (rel, _) in files.items():
            ran = remote.run(f"{setup.configtest} {q(rel)} {q(staged[path])}{strict} 2>&1")
            if not ran.ok:
                raise OSError(f"rspamd configtest refused the new {rel}, the running files were kept: "
                              f"{tail(ran.stdout + ran.stderr)}")
    except OSError:
        discard_staged(remote, staged)
        raise
    return staged


def discard_staged(remote: Remote, staged: Mapping[str, str]) -> None:
    if staged:
        remote.run("rm -f -- " + " ".join(q(s) for s in staged.values()))


def publish_signing(remote: Remote, setup: HostDkim, staged: Mapping[str, str]) -> None:
    """Staged files live (previous ones kept), the live tree tested, reload; roll back on any failure."""
    strict = " -s" if setup.strict else ""
    prev = {path: staged_name(path, "prev") for path in staged}
    backup = " && ".join(f"cp -a -- {q(p)} {q(prev[p])}" for p in staged)
    publish = " && ".join(f"mv -f -- {q(staged[p])} {q(p)}" for p in staged)
    restore = "; ".join(f"if [ -f {q(prev[p])} ]; then mv -f -- {q(prev[p])} {q(p)}; fi" for p in staged)
    ran = remote.run(f"{backup} && {publish}")
    if not ran.ok:
        remote.run(restore)
        discard_staged(remote, staged)
        raise OSError(f"publishing failed, previous files restored: {tail(ran.stderr)}")
    ran = remote.run(f"rspamadm configtest{strict} 2>&1")
    if not ran.ok:
        remote.run(restore)
        raise OSError(f"rspamadm configtest failed on the live tree, previous files restored: "
                      f"{tail(ran.stdout + ran.stderr)}")
    ran = remote.run("systemctl reload rspamd && sleep 1 && systemctl is-active --quiet rspamd")
    if not ran.ok:
        remote.run(restore)
        remote.run("systemctl restart rspamd")
        raise OSError(f"rspamd reload failed, previous files restored: {tail(ran.stderr or ran.stdout)}")
    remote.run("rm -f -- " + " ".join(q(p) for p in prev.values()))


@dataclass
class HostSwitch:
    """One MTA's part of phase 2: what changes, and (once staged) where the candidates wait."""

    remote: Remote
    setup: HostDkim
    state: DkimState
    new_state: DkimState
    result: HostResult
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    staged: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def done(self) -> HostResult:
        self.result.seconds = time.monotonic() - self.started
        return self.result


def plan_switch(remote: Remote, setup: HostDkim, state: DkimState, new_state: DkimState, *,
                 check: bool) -> HostSwitch:
    """Read the host and decide; a failure to read it fails the host (and so the rotation)."""
    switch = HostSwitch(remote, setup, state, new_state, HostResult(remote.name, "unchanged"))
    result = switch.result
    try:
        wanted = setup.render_signing(new_state.selectors())
        live = {rel: setup.signing_path(rel) for rel in wanted}
        found = current_state(remote, list(live.values()))
        changed = [rel for rel in wanted
                   if found[live[rel]] != ("root:_rspamd:640", hashlib.sha256(wanted[rel]).hexdigest())]
        state_changed = new_state.dump() != state.dump()
        result.files = [live[rel] for rel in changed] + ([setup.state_path] if state_changed else [])
        if not result.files:
            result.message = "signing already uses this selector"
            return switch
        result.status = "changed"
        result.diff = "".join(unified_diff(live[rel], read_file(remote, live[rel]), wanted[rel]) for rel in changed)
        if state_changed:
            result.diff += unified_diff(setup.state_path, state.dump(), new_state.dump())
        switch.files = {live[rel]: (rel, wanted[rel]) for rel in changed}
        if check:
            result.message = "would switch signing"
    except OSError as exc:
        result.status, result.message = "failed", str(exc)
    return switch


def publish_switch(switch: HostSwitch) -> None:
    """The staged files live and rspamd reloaded (rolled back on this host on any failure), then the state."""
    result = switch.result
    if result.status != "changed":
        return
    try:
        if switch.staged:
            publish_signing(switch.remote, switch.setup, switch.staged)
            result.action = "reload"
        if switch.new_state.dump() != switch.state.dump():
            install_file(switch.remote, switch.setup.state_path, switch.new_state.dump(), "root", "root", "644")
        result.message = "signing switched, rspamd reloaded" if switch.staged else "state recorded"
    except OSError as exc:
        result.status, result.message = "failed", str(exc)
