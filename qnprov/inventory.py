"""One reader for Ansible inventories: hosts, groups and each host's merged variables.

Built on Ansible's ``InventoryManager`` and ``VariableManager``, so qnprov sees what a
playbook run sees: any inventory source Ansible reads (a ``hosts.yml``, a directory of
them), ``children``, ``group_vars/`` and ``host_vars/`` beside the inventory, merged with
Ansible's precedence. Nothing is templated: ``{{ ... }}`` strings and vault values need
a play to render. :meth:`Inventory.host_vars` gives them as Ansible holds them (for the
argument-spec check, which skips them); :meth:`Inventory.literal_vars` drops them and
gives plain Python data (for everything that uses the values).

The second engine, ``qnprov push`` (pyinfra), reads inventories here too:
:meth:`Inventory.role_vars` gives a host's variables as one role's tasks see them (role
defaults, then the inventory, then the role's ``vars/``), rendered by Ansible's own
templar, so a template rendered through it is byte-for-byte what the role's ``template``
task writes; :meth:`Inventory.ssh_target` gives the connection Ansible would open (user,
port, key, known_hosts, host key checking, become). Vault values are decrypted with the
``vault_password_file`` given to :func:`load`, as ``ansible-playbook`` does.

Every problem (no such inventory, a source Ansible cannot parse, a broken ``group_vars``
file) is a :class:`~qnprov.errors.ConfigError` naming the inventory.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qnprov.errors import ConfigError

#: The variable of a lab host: qnprov creates its container (``qnprov lab up``).
LAB_CONTAINER_VAR = "qnprov_lab_container"
#: Groups every host is in; not worth listing.
_IMPLICIT_GROUPS = ("all", "ungrouped")


def is_deferred(value: Any) -> bool:
    """Values Ansible resolves later (templates, vault) cannot be read or checked now."""
    if type(value).__name__ in {"AnsibleVaultEncryptedUnicode", "EncryptedString"}:
        return True
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_deferred(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_deferred(v) for v in value)
    return False


def plain(value: Any) -> Any:
    """Strip Ansible's tagged types so the value is plain Python data (not for deferred values)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


class Inventory:
    """A parsed inventory. Build it with :func:`load`."""

    def __init__(self, source: Path, loader: Any, manager: Any, variables: Any,
                 vault_secrets: list[tuple[str, Any]] | None = None) -> None:
        self.source = source
        self._vault_secrets = list(vault_secrets or [])
        self._loader = loader
        self._manager = manager
        self._variables = variables
        self._cache: dict[str, dict[str, Any]] = {}

    @property
    def hosts(self) -> list[str]:
        """Every host, in inventory order."""
        return [h.name for h in self._manager.get_hosts()]

    def groups(self) -> dict[str, list[str]]:
        """Each named group with all of its hosts (those of its children included)."""
        found: dict[str, list[str]] = {}
        for name, group in sorted(self._manager.groups.items()):
            if name not in _IMPLICIT_GROUPS:
                found[name] = sorted(h.name for h in group.get_hosts())
        return found

    def group_vars(self, group: str = "all") -> dict[str, Any]:
        """A group's own variables (inline, then ``group_vars/<group>``), without any host's.

        What is true of the whole inventory lives in ``all``; an inventory of variables
        alone (``group_vars/`` and no hosts) still has them here.
        """
        from ansible.errors import AnsibleError
        from ansible.utils.vars import combine_vars
        from ansible.vars.plugins import get_vars_from_inventory_sources

        entry = self._manager.groups.get(group)
        if entry is None:
            raise ConfigError(f"inventory {self.source} has no group {group!r}")
        try:
            files = get_vars_from_inventory_sources(self._loader, [str(self.source)], [entry], "task")
        except AnsibleError as exc:
            raise ConfigError(f"inventory {self.source}: variables of group {group}: {_first_line(exc)}") from exc
        return dict(combine_vars(entry.get_vars(), files))

    def literal_group_vars(self, group: str = "all") -> dict[str, Any]:
        """:meth:`group_vars` that need no rendering, as plain Python data."""
        return _literal(self.group_vars(group))

    def hosts_matching(self, pattern: str) -> list[str]:
        """The hosts an Ansible host pattern (``all``, a group, ``a:!b``, ...) selects.

        A group the inventory does not have selects nothing, silently: site.yml's
        ``mta:store`` must not print Ansible's "Could not match supplied host pattern"
        warning for an inventory without mail stores.
        """
        from ansible import constants
        from ansible.errors import AnsibleError

        mismatch = constants.HOST_PATTERN_MISMATCH
        constants.HOST_PATTERN_MISMATCH = "ignore"
        try:
            return [h.name for h in self._manager.get_hosts(pattern=pattern)]
        except AnsibleError as exc:
            raise ConfigError(f"inventory {self.source}: host pattern {pattern!r}: {_first_line(exc)}") from exc
        finally:
            constants.HOST_PATTERN_MISMATCH = mismatch

    def host_vars(self, host: str) -> dict[str, Any]:
        """The host's variables as Ansible merges them (inventory, group_vars, host_vars; no play)."""
        if host not in self._cache:
            from ansible.errors import AnsibleError

            entry = self._manager.get_host(host)
            if entry is None:
                raise ConfigError(f"inventory {self.source} has no host {host!r}")
            try:
                self._cache[host] = dict(self._variables.get_vars(host=entry, include_hostvars=False))
            except AnsibleError as exc:
                raise ConfigError(f"inventory {self.source}: variables of {host}: {_first_line(exc)}") from exc
        return dict(self._cache[host])

    def literal_vars(self, host: str) -> dict[str, Any]:
        """The host's variables that need no rendering, as plain Python data."""
        return _literal(self.host_vars(host))

    @property
    def lab_hosts(self) -> list[str]:
        """The hosts that are lab containers (they have ``qnprov_lab_container``)."""
        return [host for host in self.hosts if LAB_CONTAINER_VAR in self.host_vars(host)]

    @property
    def is_lab(self) -> bool:
        """A lab inventory: qnprov creates its hosts and keeps their state (``lab.json``)."""
        return bool(self.lab_hosts)

    def all_host_vars(self) -> dict[str, dict[str, Any]]:
        """:meth:`host_vars` of every host."""
        return {host: self.host_vars(host) for host in self.hosts}


    def role_vars(self, host: str, role_dir: Path) -> RoleVars:
        """The host's variables as the tasks of the role in ``role_dir`` see them, ready to render."""
        from ansible.errors import AnsibleError
        from ansible.utils.vars import combine_vars

        merged: dict[str, Any] = {}
        try:
            defaults = role_dir / "defaults" / "main.yml"
            if defaults.is_file():
                merged = dict(self._loader.load_from_file(str(defaults), trusted_as_template=True) or {})
            merged = dict(combine_vars(merged, self.host_vars(host)))
            role_own = role_dir / "vars" / "main.yml"
            if role_own.is_file():
                merged = dict(combine_vars(merged, self._loader.load_from_file(str(role_own),
                                                                                trusted_as_template=True) or {}))
        except AnsibleError as exc:
            raise ConfigError(f"inventory {self.source}: variables of {host} for {role_dir.name}: "
                              f"{_first_line(exc)}") from exc
        merged.setdefault("inventory_hostname", host)
        merged.setdefault("role_path", str(role_dir))
        return RoleVars(self._loader, merged, f"{host} ({role_dir.name})", self._vault_secrets)

    def ssh_target(self, host: str) -> SshTarget:
        """How Ansible reaches ``host`` over SSH, from the same variables (templated)."""
        names = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
                 "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_become", "ansible_connection")
        resolved = RoleVars(self._loader, self.host_vars(host), host, self._vault_secrets)
        get = {name: resolved.value(name) if name in resolved.names else None for name in names}
        connection = get["ansible_connection"] or "ssh"
        if connection not in ("ssh", "paramiko", "smart"):
            raise ConfigError(f"inventory {self.source}: {host} uses ansible_connection={connection}; "
                              "qnprov push reaches hosts over SSH only")
        options = _ssh_options(f"{get['ansible_ssh_common_args'] or ''} {get['ansible_ssh_extra_args'] or ''}")
        strict = options.get("stricthostkeychecking", "yes").lower()
        return SshTarget(
            host=host,
            hostname=str(get["ansible_host"] or host),
            port=int(get["ansible_port"] or 22),
            user=str(get["ansible_user"]) if get["ansible_user"] else None,
            key=str(get["ansible_ssh_private_key_file"]) if get["ansible_ssh_private_key_file"] else None,
            known_hosts=options.get("userknownhostsfile"),
            strict_host_key_checking=strict if strict in ("yes", "no", "accept-new") else "yes",
            become=bool(get["ansible_become"]),
        )


@dataclass(frozen=True)
class SshTarget:
    """One host's SSH connection, as Ansible's ssh connection plugin would open it."""

    host: str
    hostname: str
    port: int
    user: str | None
    key: str | None
    known_hosts: str | None
    strict_host_key_checking: str
    become: bool


def _ssh_options(args: str) -> dict[str, str]:
    """``-o Name=value`` pairs of an ssh argument string, names lower-cased."""
    found: dict[str, str] = {}
    words = shlex.split(args)
    for index, word in enumerate(words):
        option = words[index + 1] if word == "-o" and index + 1 < len(words) else (
            word[2:] if word.startswith("-o") and len(word) > 2 else None)
        if option:
            name, *value = re.split(r"[= ]", option, maxsplit=1)
            found[name.lower()] = value[0] if value else ""
    return found


@contextlib.contextmanager
def _vault_context(secrets: list[tuple[str, Any]]) -> Iterator[None]:
    """Ansible 2.19 decrypts vault values through one process-wide context, which
    ``ansible-playbook`` sets once from its ``--vault-password-file``. Here each inventory
    brings its own secrets, so the context holds them only while its values render."""
    from ansible.parsing.vault import VaultSecretsContext

    saved = VaultSecretsContext._current
    VaultSecretsContext._current = VaultSecretsContext(secrets) if secrets else None
    try:
        yield
    finally:
        VaultSecretsContext._current = saved


_PLUGINS_READY: list[bool] = []


def _init_plugins() -> None:
    """Ansible's plugin loader (filters, lookups), once per process."""
    if not _PLUGINS_READY:
        from ansible.plugins.loader import init_plugin_loader

        with contextlib.suppress(Exception):
            init_plugin_loader()
        _PLUGINS_READY.append(True)


class RoleVars:
    """Variables rendered by Ansible's templar (lookups, filters, vault) exactly as a play would."""

    def __init__(self, loader: Any, variables: Mapping[str, Any], where: str,
                 vault_secrets: list[tuple[str, Any]] | None = None) -> None:
        from ansible.template import Templar

        _init_plugins()
        self._vault_secrets = list(vault_secrets or [])
        self._variables = dict(variables)
        self._templar = Templar(loader=loader, variables=self._variables)
        self._where = where

    @property
    def names(self) -> set[str]:
        return set(self._variables)

    def value(self, name: str) -> Any:
        """One variable, fully rendered, as plain Python data."""
        from ansible.errors import AnsibleError

        if name not in self._variables:
            raise ConfigError(f"{self._where}: variable {name} is not defined")
        try:
            with _vault_context(self._vault_secrets):
                return plain(self._templar.template(self._variables[name]))
        except AnsibleError as exc:
            raise ConfigError(f"{self._where}: variable {name}: {_first_line(exc)}") from exc

    def render(self, template: Path, extra: Mapping[str, Any] | None = None) -> str:
        """A template file rendered as the ``template`` module renders it (trim_blocks, \\n)."""
        from ansible.errors import AnsibleError
        from ansible.template import trust_as_template

        variables = {**self._variables, **(extra or {})}
        templar = self._templar.copy_with_new_env(searchpath=[str(template.parent)], available_variables=variables)
        try:
            with _vault_context(self._vault_secrets):
                text = templar.template(trust_as_template(template.read_text(encoding="utf-8")),
                                        escape_backslashes=False,
                                        overrides={"trim_blocks": True, "lstrip_blocks": False,
                                                   "newline_sequence": "\n"})
        except AnsibleError as exc:
            raise ConfigError(f"{self._where}: template {template.name}: {_first_line(exc)}") from exc
        return "" if text is None else str(text)


def _literal(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {name: plain(value) for name, value in variables.items() if not is_deferred(value)}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def load(source: Path | str, *, extra_vars_files: Iterable[Path] = (),
         vault_password_file: Path | None = None) -> Inventory:
    """Parse an inventory (a file or a directory); ConfigError when it is missing or broken.

    ``extra_vars_files`` are ``-e @file`` for the merge: they win over everything.
    ``vault_password_file`` decrypts vault values, as ``--vault-password-file`` does.
    """
    from ansible import context
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import IGNORED, InventoryManager
    from ansible.module_utils.common.collections import ImmutableDict
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    path = Path(source)
    if not path.exists():
        raise ConfigError(f"inventory {path} not found")

    class _Manager(InventoryManager):
        """Remembers the files no inventory plugin could parse (Ansible only warns)."""

        unparsed: list[str]

        def parse_source(self, source: str, cache: bool = False) -> bool:
            if Path(source).is_dir() and not any(not IGNORED.search(os.fsencode(entry.name))
                                                 for entry in Path(source).iterdir()):
                return True  # variables alone (group_vars/, host_vars/): nothing to warn about
            parsed = bool(super().parse_source(source, cache=cache))
            if not parsed and not Path(source).is_dir():
                self.unparsed.append(source)
            return parsed

    _Manager.unparsed = []
    context.CLIARGS = ImmutableDict(extra_vars=tuple(f"@{p}" for p in extra_vars_files))
    loader = DataLoader()
    vault_secrets: list[tuple[str, Any]] = []
    if vault_password_file is not None:
        from ansible.parsing.vault import get_file_vault_secret

        try:
            secret = get_file_vault_secret(filename=str(vault_password_file), loader=loader)
            secret.load()
        except AnsibleError as exc:
            raise ConfigError(f"vault password file {vault_password_file}: {_first_line(exc)}") from exc
        loader.set_vault_secrets([("default", secret)])
        vault_secrets.append(("default", secret))
    warnings = io.StringIO()
    try:
        # Ansible prints a multi-line warning per plugin that declines a file; the
        # user gets one line instead (below), and any other warning as it was.
        with contextlib.redirect_stderr(warnings):
            manager = _Manager(loader=loader, sources=[str(path)])
            variables = VariableManager(loader=loader, inventory=manager)
    except AnsibleError as exc:
        raise ConfigError(f"inventory {path}: {_first_line(exc)}") from exc
    if _Manager.unparsed:
        # "[WARNING]: Failed to parse inventory with 'auto' plugin: <the cause>"
        causes = [line.split(": ", 2)[-1] for line in warnings.getvalue().splitlines()
                  if line.startswith("[WARNING]: Failed to parse") and line.count(": ") >= 2]
        raise ConfigError(f"inventory {path}: Ansible cannot parse {', '.join(_Manager.unparsed)}"
                          + (f" ({causes[0]})" if causes else ""))
    sys.stderr.write(warnings.getvalue())
    return Inventory(path, loader, manager, variables, vault_secrets)
