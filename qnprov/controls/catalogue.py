"""The control catalogue: YAML data in the package, validated into typed models."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qnprov.errors import ConfigError

#: The decision's clauses, in the order the decision lists them.
CLAUSE_IDS: tuple[str, ...] = ("1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)", "2", "3")

#: Anchor sources (controls.md) plus RFCs, which several controls cite directly, and DEC:
#: the decision itself (../shared/seed), for the controls that carry its rules.
AnchorSource = Literal["MOZ", "PFX", "DOV", "LDAP", "INL", "CIS", "DEV", "LYN", "RFC", "DEC"]

#: Families of controls and the roles that usually enforce them.
CONTROL_FAMILIES: tuple[str, ...] = ("PFX", "DOV", "LDAP", "RSP", "OS", "TLS", "POL")

_CONTROL_ID = re.compile(r"^QN-(PFX|DOV|LDAP|RSP|OS|TLS|POL)-\d{2}$")
_TEST_ID = re.compile(r"^test_[a-z0-9_]+\.py::test_[a-z0-9_]+$")
_VARIABLE = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Anchor(_Strict):
    source: AnchorSource
    ref: str = Field(min_length=3)


class Enforcement(_Strict):
    """Where a control is enforced: a role variable, or a setting a role's template fixes.

    ``variable`` must be declared in ``roles/<role>/defaults/main.yml``; ``template``
    (relative to the repository) must exist and mention ``setting``.
    """

    role: str = Field(min_length=1)
    variable: str | None = None
    template: str | None = None
    setting: str | None = None

    @field_validator("variable")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _VARIABLE.match(value):
            raise ValueError(f"{value!r} is not an Ansible variable name")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Enforcement:
        if (self.variable is None) == (self.template is None):
            raise ValueError("enforcement names either a variable or a template (with its setting)")
        if self.template is not None and not self.setting:
            raise ValueError(f"template {self.template} needs the setting it fixes")
        return self

    @property
    def label(self) -> str:
        if self.variable:
            return f"roles/{self.role}/defaults/main.yml: {self.variable}"
        return f"{self.template}: {self.setting} (role {self.role})"


class Control(_Strict):
    id: str
    title: str = Field(min_length=5)
    clauses: list[str] = Field(min_length=1)
    anchors: list[Anchor] = Field(min_length=1)
    enforcement: list[Enforcement] = Field(min_length=1)
    tests: list[str] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _CONTROL_ID.match(value):
            raise ValueError(f"control id {value!r} must look like QN-PFX-01 (families {CONTROL_FAMILIES})")
        return value

    @field_validator("clauses")
    @classmethod
    def _known_clauses(cls, value: list[str]) -> list[str]:
        unknown = [clause for clause in value if clause not in CLAUSE_IDS]
        if unknown:
            raise ValueError(f"unknown clause(s) {unknown}; the decision has {', '.join(CLAUSE_IDS)}")
        return value

    @field_validator("tests")
    @classmethod
    def _test_shape(cls, value: list[str]) -> list[str]:
        bad = [test for test in value if not _TEST_ID.match(test)]
        if bad:
            raise ValueError(f"test ids {bad} must look like test_file.py::test_name")
        return value

    @property
    def family(self) -> str:
        return self.id.split("-")[1]

    @property
    def clause_text(self) -> str:
        return ", ".join(self.clauses)


class Catalogue(_Strict):
    schema_version: Literal[1]
    controls: list[Control] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        seen: set[str] = set()
        for control in self.controls:
            if control.id in seen:
                raise ValueError(f"duplicate control id {control.id}")
            seen.add(control.id)
        return self

    def by_id(self) -> dict[str, Control]:
        return {control.id: control for control in self.controls}

    def get(self, control_id: str) -> Control:
        try:
            return self.by_id()[control_id]
        except KeyError:
            raise ConfigError(f"unknown control id {control_id!r}") from None

    def controls_for_test(self) -> dict[str, list[str]]:
        """Map each test node id (``file::function``) to the controls that name it."""
        mapping: dict[str, list[str]] = {}
        for control in self.controls:
            for test in control.tests:
                mapping.setdefault(test, []).append(control.id)
        return mapping


def packaged_catalogue_path() -> Path:
    return Path(str(resources.files("qnprov.controls") / "data" / "controls.yaml"))


def parse_catalogue(raw: object, source: str = "catalogue") -> Catalogue:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a control catalogue must be a mapping")
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']} ({exc.error_count()} problem(s))") from exc


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load and validate a catalogue (default: the packaged one)."""
    if path is None:
        return _packaged_catalogue()
    return _load(path)


@lru_cache(maxsize=1)
def _packaged_catalogue() -> Catalogue:
    return _load(packaged_catalogue_path())


def _load(path: Path) -> Catalogue:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read control catalogue {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"control catalogue {path} is not valid YAML: {exc}") from exc
    return parse_catalogue(raw, str(path))
