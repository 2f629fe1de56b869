"""What ``qnprov push policy`` writes on a host: the files of ``roles/qnprov_milter``'s policy tasks.

Every file comes from the same variables and the same templates the role uses
(``templates/qnprov_milter/*.j2``, rendered by Ansible's templar through
:meth:`qnprov.inventory.Inventory.role_vars`), with the same owner, group and mode, so a
push and a deploy write identical bytes and neither sees the other's work as a change.
Diffs shown to the operator never carry a secret (:func:`redact`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qnprov import paths
from qnprov.errors import ConfigError
from qnprov.inventory import Inventory, RoleVars

ROLE_DIR = paths.ROLES_DIR / "qnprov_milter"
TEMPLATES = paths.TEMPLATES_DIR / "qnprov_milter"
#: The files the policy directory holds, by the name the check command gives them.
OVERRIDES, AGENCIES, BLOCKLIST = "overrides.yml", "agencies.yml", "blocklist.yml"


@dataclass(frozen=True)
class DesiredFile:
    """One file as the role would leave it."""

    path: str
    content: bytes
    owner: str = "root"
    group: str = "postfix"
    mode: str = "640"
    #: Written only when missing (the role's ``force: false``): the block list.
    create_only: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class PolicyFiles:
    """The policy directory's managed files, and the trust anchors beside it."""

    policy_dir: str
    python: str
    files: tuple[DesiredFile, ...]
    #: Anchors live outside the policy directory (root:root 0644, not validated by the milter).
    anchors: tuple[DesiredFile, ...] = ()
    anchors_dir: str = "/etc/qnprov/trust-anchors"
    #: The site bundle, relative to the policy directory (``bundle/<name>``), or "".
    bundle: str = ""
    enabled: bool = True
    #: Owner and group of the policy directory (and the bundle directory in it), as the role sets them.
    dir_owner: str = "root"
    dir_group: str = "postfix"

    def check_argv(self, directory: str) -> list[str]:
        """The role's check command, on the policy files found in ``directory`` (staged or live)."""
        argv = [self.python, "-m", "qnprov.policy.milter_cli", "milter", "--check-config"]
        if self.bundle:
            argv += ["--bundle", f"{directory}/{self.bundle}"]
        return [*argv, "--overrides", f"{directory}/{OVERRIDES}", "--agency-map", f"{directory}/{AGENCIES}",
                "--blocklist", f"{directory}/{BLOCKLIST}"]

    def with_blocklist(self, content: bytes) -> PolicyFiles:
        """Only the block list, replaced (``push block``/``unblock``)."""
        path = f"{self.policy_dir}/{BLOCKLIST}"
        current = next((f for f in self.files if f.path == path), DesiredFile(path, b""))
        return dataclasses.replace(self, files=(dataclasses.replace(current, content=content, create_only=False),),
                                   anchors=())


def _bundle_files(source: str, policy_dir: str) -> tuple[list[DesiredFile], str]:
    """The role copies the bundle file's whole directory to ``<policy_dir>/bundle/``."""
    bundle = Path(source)
    if not bundle.is_file():
        raise ConfigError(f"qnprov_milter_bundle_src {source} is not a file on this machine")
    found = []
    for path in sorted(p for p in bundle.parent.rglob("*") if p.is_file()):
        relative = PurePosixPath(*path.relative_to(bundle.parent).parts)
        found.append(DesiredFile(f"{policy_dir}/bundle/{relative}", path.read_bytes()))
    return found, f"bundle/{bundle.name}"


def policy_files(inventory: Inventory, host: str) -> PolicyFiles:
    """What the role's policy tasks would write on ``host``."""
    variables: RoleVars = inventory.role_vars(host, ROLE_DIR)
    policy_dir = str(variables.value("qnprov_milter_policy_dir")).rstrip("/")
    enabled = bool(variables.value("qnprov_milter_enabled"))
    python = str(variables.value("__qnprov_milter_python"))

    def render(name: str) -> bytes:
        return variables.render(TEMPLATES / f"{name}.j2").encode("utf-8")

    files = [DesiredFile(f"{policy_dir}/{OVERRIDES}", render(OVERRIDES)),
             DesiredFile(f"{policy_dir}/{AGENCIES}", render(AGENCIES)),
             DesiredFile(f"{policy_dir}/{BLOCKLIST}", render(BLOCKLIST), create_only=True)]
    bundle = ""
    source = str(variables.value("qnprov_milter_bundle_src") or "")
    if source:
        bundle_files, bundle = _bundle_files(source, policy_dir)
        files = bundle_files + files
    anchors_dir = str(variables.value("qnprov_milter_trust_anchors_dir")).rstrip("/")
    anchors = tuple(
        DesiredFile(f"{anchors_dir}/{PurePosixPath(str(item['name'])).name}", str(item["pem"]).encode("utf-8"),
                    group="root", mode="644")
        for item in variables.value("qnprov_milter_trust_anchors") or [])
    return PolicyFiles(policy_dir=policy_dir, python=python, files=tuple(files), anchors=anchors,
                       anchors_dir=anchors_dir, bundle=bundle, enabled=enabled)


_SENSITIVE_KEY_WORDS = r"(pass|_pw|pwd|secret|token|private|credential|api[_-]?key)"
_SECRET_KEY = re.compile(r"^(\s*-?\s*[\"']?[\w.-]*" + _SENSITIVE_KEY_WORDS + r"[\w.-]*[\"']?\s*[:=]\s*)(\S.*)$",
                         re.IGNORECASE)
_PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)


def redact(text: str) -> str:
    """Values of secret-looking keys and private keys never reach a diff."""
    text = _PEM_PRIVATE.sub("<private key redacted>", text)
    return "\n".join(_SECRET_KEY.sub(r"\1<redacted>", line) for line in text.split("\n"))


def unified_diff(path: str, before: bytes | None, after: bytes) -> str:
    """A diff of one file for ``--check``/``--diff``, redacted; binary files as checksums."""
    try:
        old = redact(before.decode("utf-8")) if before is not None else ""
        new = redact(after.decode("utf-8"))
    except UnicodeDecodeError:
        was = hashlib.sha256(before).hexdigest() if before is not None else "missing"
        return f"{path}: binary, sha256 {was} -> {hashlib.sha256(after).hexdigest()}\n"
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"{path} (host)" if before is not None else "/dev/null",
                                 tofile=f"{path} (inventory)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
