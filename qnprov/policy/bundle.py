"""Load, merge and validate the rule bundle with its data files and site overrides.

Merging happens here, in Python, so templates and the milter only ever see the merged,
validated result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from qnprov.errors import ConfigError
from qnprov.policy.domains import parse_domain_list
from qnprov.policy.models import (
    Bundle,
    MarkingData,
    Overrides,
    ProvinceHost,
    ProvinceHosts,
    Rule,
    SubjectPatterns,
)

PACKAGED_BUNDLE_NAME = "decision-unnumbered-2014.yaml"

#: Inventory key that may wrap the overrides (so a group_vars file can be passed as is).
OVERRIDES_KEY = "qnprov_policy_overrides"


def packaged_bundle_path() -> Path:
    return Path(str(resources.files("qnprov.policy") / "data" / PACKAGED_BUNDLE_NAME))


@dataclass(frozen=True)
class PolicyData:
    """A merged bundle plus the data files it names: everything the detectors read."""

    bundle: Bundle
    source: Path
    markings: MarkingData
    freemail_domains: frozenset[str]
    registration_senders: dict[str, str]
    registration_subjects: tuple[re.Pattern[str], ...]
    province_hosts: tuple[ProvinceHost, ...]
    #: The whole registration-intent file (body, welcome, negative patterns); None: subjects only.
    registration_intent: SubjectPatterns | None = None

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def local_domains(self) -> frozenset[str]:
        return frozenset(self.bundle.local_domains)

    @property
    def province_domains(self) -> frozenset[str]:
        hosts = {host.domain for host in self.province_hosts}
        return frozenset(self.bundle.local_domains) | frozenset(self.bundle.province_domains) | hosts


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from exc


def _format_validation(error: ValidationError, path: Path) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{location}: {item['msg']}")
    return f"{path}: " + "; ".join(problems)


def load_overrides(path: Path) -> Overrides:
    raw = _read_yaml(path, "overrides file")
    if raw is None:
        return Overrides()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: overrides must be a mapping, got {type(raw).__name__}")
    if OVERRIDES_KEY in raw:
        raw = raw[OVERRIDES_KEY] or {}
    try:
        return Overrides.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, path)) from exc


def merge_overrides(bundle: Bundle, overrides: Overrides, *, source: Path) -> Bundle:
    """Apply site overrides and validate the result as a whole bundle."""
    data = bundle.model_dump(mode="python")
    known = {rule.id for rule in bundle.rules}
    unknown = sorted(set(overrides.rules) - known)
    if unknown:
        raise ConfigError(f"{source}: overrides name unknown rules {unknown}; known: {sorted(known)}")
    for field in ("local_domains", "province_domains", "trust_anchors_dir", "failure_verdict"):
        value = getattr(overrides, field)
        if value is not None:
            data[field] = value
    unknown_limits = sorted(set(overrides.limits) - set(data["limits"]))
    if unknown_limits:
        raise ConfigError(f"{source}: unknown limits {unknown_limits}; known: {sorted(data['limits'])}")
    data["limits"].update(overrides.limits)
    for rule in data["rules"]:
        change = overrides.rules.get(rule["id"])
        if change is None:
            continue
        if change.action is not None:
            rule["action"] = change.action
        if change.enabled is not None:
            rule["enabled"] = change.enabled
        if change.scope is not None:
            rule["scope"] = change.scope
        rule["params"] = {**rule["params"], **change.params}
    try:
        return Bundle.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from exc


def load_policy(bundle_path: Path | None = None, overrides_path: Path | None = None) -> PolicyData:
    """Load a bundle (default: the packaged one), its data files and optional overrides."""
    path = bundle_path or packaged_bundle_path()
    raw = _read_yaml(path, "rule bundle")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a rule bundle must be a mapping")
    try:
        bundle = Bundle.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, path)) from exc
    overrides = load_overrides(overrides_path) if overrides_path else Overrides()
    if overrides_path:
        bundle = merge_overrides(bundle, overrides, source=overrides_path)
    base = path.parent
    files = bundle.data_files

    markings_raw = _read_yaml(base / files.markings, "markings file")
    subjects_raw = _read_yaml(base / files.registration_subjects, "subject patterns file")
    hosts_raw = _read_yaml(base / files.province_hosts, "province hosts file")
    try:
        markings = MarkingData.model_validate(markings_raw)
        subjects = SubjectPatterns.model_validate(subjects_raw)
        hosts = ProvinceHosts.model_validate(hosts_raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, base)) from exc
    try:
        freemail = (base / files.freemail_domains).read_text(encoding="utf-8")
        senders = (base / files.registration_senders).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read a data file of {path}: {exc}") from exc
    province_hosts = tuple(overrides.province_hosts) if overrides.province_hosts is not None else tuple(hosts.hosts)
    return PolicyData(
        bundle=bundle,
        source=path,
        markings=markings,
        freemail_domains=frozenset(parse_domain_list(freemail)),
        registration_senders=parse_domain_list(senders),
        registration_subjects=tuple(re.compile(p, re.IGNORECASE) for p in subjects.patterns),
        province_hosts=province_hosts,
        registration_intent=subjects,
    )


def enabled_rules(policy: PolicyData) -> tuple[Rule, ...]:
    return tuple(rule for rule in policy.bundle.rules if rule.enabled)
