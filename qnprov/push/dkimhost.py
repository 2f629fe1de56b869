"""One MTA's side of a DKIM rotation: its variables, its resolver, its keys, its rspamd switch.

:class:`HostDkim` holds what ``roles/rspamd`` (and ``roles/resolver``) say about the host,
rendered by the same templar; the functions run the steps of :mod:`qnprov.push.dkim` on
one host through a :class:`qnprov.push.remote.Remote`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from shlex import quote as q

from qnprov import paths
from qnprov.inventory import Inventory, RoleVars
from qnprov.push.apply import stage_file, staged_name
from qnprov.push.dkimkeys import STATE_NAME, Lookup, dns_query, parse_txt_answer, record_name
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


def switch_signing(remote: Remote, setup: HostDkim, files: Mapping[str, tuple[str, bytes]]) -> None:
    """Stage, validate each candidate, publish, test the live tree, reload; roll back on any failure."""
    strict = " -s" if setup.strict else ""
    staged = {path: stage_file(remote, path, content, "root", "_rspamd", "640") for path, (_, content) in files.items()}
    prev = {path: staged_name(path, "prev") for path in files}
    for path, (rel, _) in files.items():
        ran = remote.run(f"{CONFIGTEST} {q(rel)} {q(staged[path])}{strict} 2>&1")
        if not ran.ok:
            remote.run("rm -f -- " + " ".join(q(s) for s in staged.values()))
            raise OSError(f"rspamd configtest refused the new {rel}, the running files were kept: "
                          f"{tail(ran.stdout + ran.stderr)}")
    backup = " && ".join(f"cp -a -- {q(p)} {q(prev[p])}" for p in files)
    publish = " && ".join(f"mv -f -- {q(staged[p])} {q(p)}" for p in files)
    restore = "; ".join(f"if [ -f {q(prev[p])} ]; then mv -f -- {q(prev[p])} {q(p)}; fi" for p in files)
    ran = remote.run(f"{backup} && {publish}")
    if not ran.ok:
        remote.run(restore)
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

