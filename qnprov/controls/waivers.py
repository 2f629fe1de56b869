"""Waivers: a control an auditor has agreed not to enforce, for a reason, until a date.

File format (YAML)::

    waivers:
      - id: QN-OS-09
        reason: Lynis scores containers low on kernel checks the host owns; tracked in OPS-12
        expires: 2027-03-31
        hosts: [mail1]          # optional; default: every host
      - id: QN-TLS-06
        findings: [cert_revocation]   # optional: accept only these scanner findings
        reason: the lab CA publishes no CRL or OCSP responder; production uses the public CA's
        expires: 2027-03-31

A waiver with ``findings`` does not waive the control: the scanner test ignores
exactly those finding IDs, every other finding still counts, and the control is
reported ``waived`` only when an accepted finding actually occurred.

A waiver without a reason, without an expiry date, or for an unknown control is an
error. An expired waiver is kept (the report says it expired) but does not apply.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qnprov.controls.catalogue import Catalogue
from qnprov.errors import ConfigError


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    reason: str
    expires: dt.date
    hosts: list[str] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)

    @field_validator("reason")
    @classmethod
    def _reason_given(cls, value: str) -> str:
        if len(value.strip()) < 10:
            raise ValueError("a waiver needs a written reason (at least a sentence)")
        return value.strip()

    def active(self, today: dt.date) -> bool:
        return today <= self.expires

    def covers(self, host: str) -> bool:
        return not self.hosts or host in self.hosts


class WaiverSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    waivers: list[Waiver] = Field(default_factory=list)

    def for_control(self, control_id: str, host: str, today: dt.date) -> tuple[Waiver | None, Waiver | None]:
        """(active waiver, expired waiver) for a control on a host."""
        active = expired = None
        for waiver in self.waivers:
            if waiver.id != control_id or not waiver.covers(host) or waiver.findings:
                continue
            if waiver.active(today):
                active = waiver
            else:
                expired = waiver
        return active, expired


    def accepted_findings(self, host: str, today: dt.date) -> dict[str, dict[str, str]]:
        """Active finding-scoped waivers for a host: {control id: {finding id: reason}}."""
        accepted: dict[str, dict[str, str]] = {}
        for waiver in self.waivers:
            if waiver.findings and waiver.covers(host) and waiver.active(today):
                for finding in waiver.findings:
                    accepted.setdefault(waiver.id, {})[finding] = waiver.reason
        return accepted


def parse_waivers(raw: object, catalogue: Catalogue, source: str = "waivers") -> WaiverSet:
    if raw is None:
        return WaiverSet()
    if not isinstance(raw, dict) or not isinstance(raw.get("waivers", []), list):
        raise ConfigError(f"{source}: expected a mapping with a 'waivers' list")
    entries = raw.get("waivers") or []
    waivers = []
    for index, entry in enumerate(entries):
        label = entry.get("id", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
        if isinstance(entry, dict) and not str(entry.get("reason") or "").strip():
            raise ConfigError(f"{source}: waiver {label} has no reason; every waiver must say why")
        try:
            waiver = Waiver.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "entry"
            raise ConfigError(f"{source}: waiver {label}: {field}: {first['msg']}") from exc
        if waiver.id not in catalogue.by_id():
            raise ConfigError(f"{source}: waiver {label} names an unknown control")
        waivers.append(waiver)
    return WaiverSet(waivers=waivers)


def load_waivers(path: Path, catalogue: Catalogue) -> WaiverSet:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read waivers file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"waivers file {path} is not valid YAML: {exc}") from exc
    return parse_waivers(raw, catalogue, str(path))
