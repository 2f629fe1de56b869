"""``qnprov push dkim rotate``: a DKIM key rotation in two phases, the same key on every MTA.

**One truth: the host's rotation state.** Each MTA keeps
``<rspamd_dkim_dir>/qnprov-dkim.json`` (root 0644, no secret): per domain, the
``active`` selector, a ``pending`` one (phase 1 done) and the selectors ``retiring``
with the date after which their DNS record may go. roles/rspamd reads the same file
(``tasks/dkim_state.yml``) and signs each domain with its ``active`` selector, falling back
to ``rspamd_dkim_selector`` for a domain that was never rotated; so after a rotation
``qnprov deploy --check`` reports 0 changed without an inventory edit, and a deploy never
switches signing back.

1. **Phase 1** (:func:`prepare`): one RSA key (``rspamd_dkim_key_bits``) for the new
   selector, generated on the controller (or read back from the MTAs that already have it,
   so a rerun or a new MTA gets the same key); staged beside the live name and renamed in
   on every MTA (``<domain>.<selector>.key`` _rspamd 0600, ``.txt`` 0644, as the role
   writes them); the state records the pending selector. Signing is untouched. The TXT
   record to publish is returned. A selector whose record is already published with
   another key is refused before any host changes.
2. **Phase 2** (:func:`activate`): every MTA must hold the same pending key; the new
   record is looked up through the host's own resolver (the inventory's
   ``resolver_interfaces``, else the host's ``/etc/resolv.conf``; no other address) and must
   carry the key's public key (checked with ``openssl`` on the host: the private key never
   leaves it). Missing: refused unless ``--force``; different: always refused. Then per
   MTA: ``local.d/dkim_signing.conf`` and ``local.d/arc.conf`` rendered from the role's
   templates with the new selector, each validated by the role's
   ``qnprov-rspamd-configtest`` before it goes live, the live tree by ``rspamadm
   configtest``, rspamd reloaded; any failure puts the previous files back and reloads them.
   The old selector is kept (key and state) for ``rspamd_dkim_retire_after_days``.

Private keys are never printed, diffed or put in JSON: :func:`secret_label`. The pure parts
(keys, records, DNS wire format, refusals, the state) are in :mod:`.dkimkeys`, one host's
steps in :mod:`.dkimhost`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from shlex import quote as q
from typing import Any

from qnprov.dns import DnsRecord, check_domain
from qnprov.errors import ExternalError, InputError
from qnprov.inventory import Inventory
from qnprov.push.apply import HostResult, current_state, install_file, read_file, unified_diff
from qnprov.push.dkimhost import (
    KEY_OWNER,
    HostDkim,
    HostSwitch,
    discard_staged,
    host_dkim,
    host_public_key,
    lookup,
    plan_switch,
    publish_switch,
    stage_signing,
)
from qnprov.push.dkimkeys import (
    DkimState,
    DomainState,
    Lookup,
    check_selector,
    default_selector,
    generate_key,
    public_b64,
    record,
    record_name,
    refusal,
    secret_label,
    txt_file,
    with_active,
    with_pending,
)
from qnprov.push.remote import Remote, connect
from qnprov.push.run import PushResult, target_hosts

OnHost = Callable[[HostResult], None]


@dataclass
class Rotation:
    """The outcome of one phase: per-host results plus what the operator must know."""

    result: PushResult
    domain: str
    selector: str
    phase: str  # "prepare" or "activate"
    records: list[DnsRecord] = field(default_factory=list)
    previous: str | None = None
    retiring: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    key: str = ""  # the secret_label of the key

    def as_json(self) -> dict[str, Any]:
        doc = self.result.as_json()
        doc["dkim"] = {"domain": self.domain, "selector": self.selector, "phase": self.phase,
                       "previous": self.previous, "key": self.key, "warnings": self.warnings,
                       "records": [{"name": r.name, "type": r.type, "value": r.value, "ttl": r.ttl,
                                    "zone": r.zone_line()} for r in self.records],
                       "retiring": self.retiring}
        return doc


def _setups(inventory: Inventory, limit: str | None, domain: str) -> dict[str, HostDkim]:
    setups = {host: host_dkim(inventory, host) for host in target_hosts(inventory, limit)}
    for host, setup in setups.items():
        if domain not in setup.domains:
            raise InputError(f"{domain} is not one of {host}'s qnprov_hosted_domains ({', '.join(setup.domains)})",
                             [{"field": "domain", "value": domain}])
    return setups


def _refuse_a_split(inventory: Inventory, limit: str, domain: str, setups: Mapping[str, HostDkim]) -> None:
    """Phase 2 switches every MTA that signs for ``domain`` at once. A ``--limit`` that
    leaves one out would split the domain's mail between two selectors, and the left-out
    MTA would go on signing with the old one after it is listed for retirement."""
    signers = [h for h in target_hosts(inventory, None)
               if domain in (setups[h] if h in setups else host_dkim(inventory, h)).domains]
    left_out = sorted(set(signers) - set(setups))
    if left_out:
        raise InputError(f"--activate switches every MTA that signs for {domain} together: --limit {limit} leaves "
                         f"out {', '.join(left_out)}, which would go on signing with the old selector; run it "
                         "without --limit (a rerun converges the MTAs that already switched)",
                         [{"field": "limit", "value": limit}])


def _read_states(remotes: Mapping[str, Remote], setups: Mapping[str, HostDkim]) -> dict[str, DkimState]:
    return {host: DkimState.parse(read_file(remote, setups[host].state_path)) for host, remote in remotes.items()}


def _active(state: DkimState, setup: HostDkim, domain: str) -> str:
    return state.domains.get(domain, DomainState()).active or setup.default_selector


def prepare(inventory: Inventory, domain: str, *, selector: str | None = None, limit: str | None = None,
            check: bool = False, now: dt.datetime | None = None, on_host: OnHost | None = None) -> Rotation:
    """Phase 1: the same new key on every MTA, signing untouched; the record to publish."""
    try:
        return _prepare(inventory, domain, selector=selector, limit=limit, check=check, now=now, on_host=on_host)
    except OSError as exc:  # reading the hosts' state and keys, or the lookup, before any host changed
        raise ExternalError(f"nothing was changed: {exc}") from None


def activate(inventory: Inventory, domain: str, *, force: bool = False, limit: str | None = None,
             check: bool = False, now: dt.datetime | None = None, on_host: OnHost | None = None) -> Rotation:
    """Phase 2: refused until the record is published with the key; then every MTA signs with it."""
    try:
        return _activate(inventory, domain, force=force, limit=limit, check=check, now=now, on_host=on_host)
    except OSError as exc:  # reading the hosts' state and keys, before any host changed
        raise ExternalError(f"nothing was changed: {exc}") from None


def _prepare(inventory: Inventory, domain: str, *, selector: str | None, limit: str | None, check: bool,
             now: dt.datetime | None, on_host: OnHost | None) -> Rotation:
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC)
    domain = check_domain(domain)
    setups = _setups(inventory, limit, domain)
    result = PushResult(command=f"dkim rotate {domain}", check=check)
    connected = connect(inventory, sorted(setups))
    try:
        for host, why in connected.failures.items():
            result.hosts[host] = HostResult(host, "failed", message=why)
        remotes = connected.remotes
        if not remotes:
            result.seconds = time.monotonic() - started
            return Rotation(result, domain, selector or "", "prepare")
        states = _read_states(remotes, setups)
        pending = {str((s.domains[domain].pending or {})["selector"]) for s in states.values()
                   if domain in s.domains and s.domains[domain].pending}
        if selector:
            chosen = check_selector(selector)
        elif len(pending) == 1:
            chosen = pending.pop()  # a rerun finishes the rotation already under way
        elif pending:
            raise InputError(f"the MTAs have different pending selectors for {domain} ({', '.join(sorted(pending))});"
                             " name the one to finish with --selector")
        else:
            chosen = default_selector(now)
        for host, state in states.items():
            if _active(state, setups[host], domain) == chosen:
                raise InputError(f"selector {chosen} already signs {domain} on {host}; choose another --selector")
        # The key: the one some MTAs already have for this selector, else a new one.
        first = sorted(remotes)[0]
        found: dict[str, str] = {}
        for host, remote in remotes.items():
            public = host_public_key(remote, setups[host].key_path(domain, chosen))
            if public:
                found[host] = public
        if len(set(found.values())) > 1:
            raise InputError(f"the MTAs hold different keys for selector {chosen} of {domain} "
                             f"({', '.join(sorted(found))}); remove them or choose another --selector")
        key: bytes | None = None
        if found:
            holder = sorted(found)[0]
            key = read_file(remotes[holder], setups[holder].key_path(domain, chosen))
            if key is None:
                raise OSError(f"{holder}: cannot read the key of selector {chosen}")
        public = next(iter(found.values())) if found else None
        if key is None:
            key = generate_key(setups[first].bits)
            public = public_b64(key)
        assert public is not None
        # A record already published for this selector must carry this key (else the rotation breaks mail).
        seen = lookup(remotes[first], setups[first], domain, chosen)
        if seen.verdict(public) == "mismatch":
            raise InputError(refusal(domain, chosen, seen, public) or "")
        label = secret_label(key)
        digest = hashlib.sha256(key).hexdigest()
        txt = txt_file(chosen, public)
        for host in sorted(remotes):
            one = _prepare_host(remotes[host], setups[host], states[host], domain, chosen, key, txt, digest,
                                label, check=check, now=now)
            result.hosts[host] = one
            if on_host:
                on_host(one)
        result.seconds = time.monotonic() - started
        return Rotation(result, domain, chosen, "prepare", records=[record(domain, chosen, public)],
                        previous=_active(states[first], setups[first], domain), key=label,
                        retiring=states[first].domains.get(domain, DomainState()).retiring)
    finally:
        connected.close()


def _prepare_host(remote: Remote, setup: HostDkim, state: DkimState, domain: str, selector: str, key: bytes,
                  txt: bytes, digest: str, label: str, *, check: bool, now: dt.datetime) -> HostResult:
    started = time.monotonic()
    result = HostResult(remote.name, "unchanged")
    try:
        key_path, txt_path = setup.key_path(domain, selector), setup.txt_path(domain, selector)
        found = current_state(remote, [key_path, txt_path])
        new_state = with_pending(state, domain, selector, digest, now)
        writes = []
        if found[key_path] != (f"{KEY_OWNER}:{KEY_OWNER}:600", digest):
            writes.append((key_path, key, "600"))
        if found[txt_path] != (f"{KEY_OWNER}:{KEY_OWNER}:644", hashlib.sha256(txt).hexdigest()):
            writes.append((txt_path, txt, "644"))
        state_changed = new_state.dump() != state.dump()
        result.files = [p for p, _, _ in writes] + ([setup.state_path] if state_changed else [])
        if not result.files:
            result.message = f"selector {selector} ready, signing unchanged"
        else:
            result.status = "changed"
            result.diff = "".join(
                f"{path}: {label}\n" if path == key_path else unified_diff(path, read_file(remote, path), content)
                for path, content, _ in writes)
            if state_changed:
                result.diff += unified_diff(setup.state_path, state.dump() if state.domains else None, new_state.dump())
            if check:
                result.message = f"would install selector {selector}'s key"
            else:
                remote.run(f"mkdir -p -- {q(setup.dkim_dir)}")
                for path, content, mode in writes:
                    install_file(remote, path, content, KEY_OWNER, KEY_OWNER, mode, secret=path == key_path)
                if state_changed:
                    install_file(remote, setup.state_path, new_state.dump(), "root", "root", "644")
                result.message = f"key of selector {selector} installed {label}; signing unchanged"
    except OSError as exc:
        result.status, result.message = "failed", str(exc)
    result.seconds = time.monotonic() - started
    return result


def _activate(inventory: Inventory, domain: str, *, force: bool, limit: str | None, check: bool,
              now: dt.datetime | None, on_host: OnHost | None) -> Rotation:
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC)
    domain = check_domain(domain)
    setups = _setups(inventory, limit, domain)
    if limit:
        _refuse_a_split(inventory, limit, domain, setups)
    result = PushResult(command=f"dkim rotate {domain} --activate", check=check)
    connected = connect(inventory, sorted(setups))
    try:
        if connected.failures:
            # every MTA must switch together: one that cannot be reached would sign with the old key
            for host, why in connected.failures.items():
                result.hosts[host] = HostResult(host, "failed", message=f"{why}; no host was changed")
            result.seconds = time.monotonic() - started
            return Rotation(result, domain, "", "activate")
        remotes = connected.remotes
        states = _read_states(remotes, setups)
        pending = {h: (s.domains[domain].pending or {}).get("selector") if domain in s.domains else None
                   for h, s in states.items()}
        chosen = {p for p in pending.values() if p}
        actives = {h: _active(states[h], setups[h], domain) for h in remotes}
        if not chosen:
            if len(set(actives.values())) == 1:
                # a rerun after a finished activation converges (nothing pending, everything signs alike)
                selector = next(iter(actives.values()))
                return _activate_hosts(result, remotes, setups, states, domain, selector, None, now, check, on_host,
                                       started, [])
            raise InputError(f"no rotation of {domain} is pending: run `qnprov push dkim rotate --domain {domain}` "
                             "first")
        if len(chosen) > 1 or any(p is None and actives[h] not in chosen for h, p in pending.items()):
            raise InputError(f"the MTAs disagree on the pending selector of {domain} "
                             f"({', '.join(f'{h}: {p or chr(45)}' for h, p in sorted(pending.items()))}); "
                             "rerun phase 1 (`qnprov push dkim rotate`) to put the same key everywhere")
        selector = chosen.pop()
        publics = {h: host_public_key(remotes[h], setups[h].key_path(domain, selector)) for h in remotes}
        if None in publics.values() or len(set(publics.values())) != 1:
            missing = sorted(h for h, p in publics.items() if p is None)
            raise InputError(f"the MTAs do not hold the same key for selector {selector} of {domain}"
                             f"{' (missing on ' + ', '.join(missing) + ')' if missing else ''}; "
                             "rerun phase 1 first")
        public = next(iter(publics.values()))
        assert public is not None
        first = sorted(remotes)[0]
        warnings: list[str] = []
        try:
            seen: Lookup | None = lookup(remotes[first], setups[first], domain, selector)
        except OSError as exc:
            if not force:
                raise InputError(f"cannot check that selector {selector} of {domain} is published "
                                 f"({record_name(domain, selector)} TXT): {exc}") from None
            seen = None
            warnings.append(f"the lookup failed ({exc}); --force switches without it")
        if seen is not None:
            problem = refusal(domain, selector, seen, public)
            if problem and (not force or seen.verdict(public) == "mismatch"):
                raise InputError(problem)
            if problem:
                warnings.append(f"--force: {record_name(domain, selector)} TXT is not visible through "
                                 f"{seen.resolver}; mail signed with {selector} fails DKIM until it is published")
        rotation = _activate_hosts(result, remotes, setups, states, domain, selector, public, now, check, on_host,
                                   started, warnings)
        return rotation
    finally:
        connected.close()


def _activate_hosts(result: PushResult, remotes: Mapping[str, Remote], setups: Mapping[str, HostDkim],
                    states: Mapping[str, DkimState], domain: str, selector: str, public: str | None,
                    now: dt.datetime, check: bool, on_host: OnHost | None, started: float,
                    warnings: list[str]) -> Rotation:
    """Every MTA switches, or none: each host's candidates are staged and validated first, and
    nothing is published anywhere unless every MTA accepted its own."""
    previous = None
    retiring: list[dict[str, Any]] = []
    switches: dict[str, HostSwitch] = {}
    for host in sorted(remotes):
        setup, state = setups[host], states[host]
        old = _active(state, setup, domain)
        previous = previous or old
        new_state = with_active(state, domain, selector, old, now, setup.retire_after_days) if old != selector \
            else state
        retiring = new_state.domains.get(domain, DomainState()).retiring
        switches[host] = plan_switch(remotes[host], setup, state, new_state, check=check)
    refused = [h for h, s in switches.items() if s.result.status == "failed"]
    if not check and not refused:
        for host, switch in switches.items():
            if switch.files:
                try:
                    switch.staged = stage_signing(switch.remote, switch.setup, switch.files)
                except OSError as exc:
                    switch.result.status, switch.result.message = "failed", str(exc)
                    refused.append(host)
                    break
    if refused:
        for host, switch in switches.items():
            discard_staged(switch.remote, switch.staged)
            if host not in refused and switch.result.status == "changed":
                switch.result.status, switch.result.files, switch.result.diff = "unchanged", [], ""
                switch.result.message = (f"not switched: {', '.join(sorted(refused))} could not take the new "
                                         "selector, and the MTAs switch together or not at all")
    elif not check:
        for switch in switches.values():
            publish_switch(switch)
    for host, switch in switches.items():
        result.hosts[host] = switch.done()
        if on_host:
            on_host(result.hosts[host])
    result.seconds = time.monotonic() - started
    records = [record(domain, selector, public)] if public else []
    return Rotation(result, domain, selector, "activate", records=records, previous=previous, retiring=retiring,
                    warnings=warnings)
