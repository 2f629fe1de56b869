"""Where qnprov finds its own files and keeps its state."""

from __future__ import annotations

import os
from pathlib import Path

#: The project tree (roles, playbooks, templates, inventories live beside the package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ROLES_DIR = PROJECT_ROOT / "roles"
PLAYBOOKS_DIR = PROJECT_ROOT / "playbooks"
TEMPLATES_DIR = PROJECT_ROOT / "templates"
INVENTORIES_DIR = PROJECT_ROOT / "inventories"
ANSIBLE_CFG = PROJECT_ROOT / "ansible.cfg"
SITE_PLAYBOOK = PLAYBOOKS_DIR / "site.yml"


def state_dir() -> Path:
    """The lab's state directory: generated secrets, CA, last status.

    ``$QNPROV_STATE_DIR`` wins; otherwise ``$XDG_STATE_HOME/qnprov/lab``.
    """
    explicit = os.environ.get("QNPROV_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qnprov" / "lab"


def resolve_inventory(name_or_path: str) -> Path:
    """``lab`` means ``inventories/lab``; anything else is a path."""
    candidate = Path(name_or_path)
    if candidate.exists():
        return candidate.resolve()
    named = INVENTORIES_DIR / name_or_path
    if named.exists():
        return named
    from qnprov.errors import ConfigError

    raise ConfigError(f"inventory {name_or_path!r} not found (neither a path nor inventories/{name_or_path})")
