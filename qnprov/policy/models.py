"""Typed models of the rule bundle and of site overrides.

The bundle is data (a YAML file shipped in the package); these models are the only
place that says what a valid bundle looks like. ``qnprov policy lint`` and the engine
both go through them, so a bundle the engine loads is a bundle lint accepts.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Direction = Literal["inbound", "outbound", "internal"]
Action = Literal["reject", "quarantine", "tag", "log"]

#: Strongest first; "strongest action wins" is an index comparison on this tuple.
ACTION_STRENGTH: tuple[Action, ...] = ("reject", "quarantine", "tag", "log")

#: Clause ids exactly as the decision numbers them.
CLAUSE_IDS = ("1.1", "1.2", "1.3(1)", "1.3(2)", "1.3(3)", "2", "3")


def known_clause(value: str, what: str = "clause") -> str:
    """``value`` if it names one of the decision's clauses; ValueError (pydantic's verdict) if not."""
    if value not in CLAUSE_IDS:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(CLAUSE_IDS)}")
    return value

_RULE_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bilingual(_Strict):
    vi: str = Field(min_length=1)
    en: str = Field(min_length=1)


class DocumentRef(_Strict):
    number: str
    date: dt.date | None = None


class DecisionIdentity(_Strict):
    number: str | None
    document_type: str
    issuer: Bilingual
    title: Bilingual
    signing_date: dt.date | None
    effective_after_days: int = Field(ge=0)
    effective_date: dt.date | None
    supersedes: DocumentRef
    proposal: DocumentRef | None = None
    unknown_fields: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _dates_agree(self) -> DecisionIdentity:
        if self.signing_date is not None:
            expected = self.signing_date + dt.timedelta(days=self.effective_after_days)
            if self.effective_date is not None and self.effective_date != expected:
                raise ValueError(
                    f"effective_date {self.effective_date} must be signing_date + "
                    f"{self.effective_after_days} days ({expected})"
                )
        elif self.effective_date is not None:
            raise ValueError("effective_date given without signing_date")
        for name in ("number", "signing_date", "effective_date"):
            if getattr(self, name) is None and name not in self.unknown_fields:
                raise ValueError(f"{name} is unknown: list it in unknown_fields rather than leave it blank")
        return self

    @property
    def computed_effective_date(self) -> dt.date | None:
        if self.signing_date is None:
            return None
        return self.signing_date + dt.timedelta(days=self.effective_after_days)


class Clause(_Strict):
    id: str
    vi: str = Field(min_length=1)
    en: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _known_clause(cls, value: str) -> str:
        return known_clause(value, "clause id")


class Limits(_Strict):
    """Caps for inspecting hostile content; crossing one gives a 'cannot inspect' finding."""

    max_message_bytes: int = Field(default=50 * 2**20, gt=0)
    max_mime_parts: int = Field(default=1000, gt=0)
    max_depth: int = Field(default=8, gt=0, le=64)
    max_archive_members: int = Field(default=500, gt=0)
    max_total_files: int = Field(default=2000, gt=0)
    max_member_bytes: int = Field(default=50 * 2**20, gt=0)
    max_xml_part_bytes: int = Field(default=16 * 2**20, gt=0)
    max_total_expanded_bytes: int = Field(default=200 * 2**20, gt=0)
    max_expansion_ratio: float = Field(default=200.0, gt=1)
    max_pdf_pages: int = Field(default=500, gt=0)
    max_wall_seconds: float = Field(default=10.0, gt=0)
    signature_timeout_seconds: float = Field(default=5.0, gt=0)
    max_signatures: int = Field(default=10, ge=0)


# -- per-detector parameters -------------------------------------------------------


class NoParams(_Strict):
    pass


class OffSystemParams(_Strict):
    #: Envelope-sender domains allowed to carry province From addresses (mailing-list hosts).
    exempt_envelope_domains: list[str] = Field(default_factory=list)


class ClassifiedMarkingParams(_Strict):
    #: Treat "GIẢI MẬT" (declassified) as a marking too.
    declassified_is_marking: bool = False


class FreemailAutoforwardParams(_Strict):
    forward_marker_headers: list[str] = Field(default_factory=lambda: ["X-Sieve-Redirected-From"])


class ServiceRegistrationParams(_Strict):
    #: A registration-looking subject from an unknown (non-province) sender counts too.
    match_subject_without_sender: bool = True


DETECTOR_PARAMS: dict[str, type[_Strict]] = {
    "sender_authentication": NoParams,
    "sender_login_match": NoParams,
    "official_identity_off_system": OffSystemParams,
    "province_route_unenforced": NoParams,
    "signed_document": NoParams,
    "signed_document_invalid": NoParams,
    "policy_header_present": NoParams,
    "classified_marking": ClassifiedMarkingParams,
    "classified_uninspectable": NoParams,
    "classified_no_text_layer": NoParams,
    "freemail_recipient": NoParams,
    "freemail_autoforward": FreemailAutoforwardParams,
    "service_registration": ServiceRegistrationParams,
}


class Rule(_Strict):
    id: str
    clause: str
    vi: str = Field(min_length=1)
    en: str = Field(min_length=1)
    detector: str
    params: dict[str, Any] = Field(default_factory=dict)
    scope: list[Direction] = Field(min_length=1)
    action: Action
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError(f"rule id {value!r} must be lower-case letters, digits and dashes")
        return value

    @field_validator("clause")
    @classmethod
    def _clause_shape(cls, value: str) -> str:
        return known_clause(value)

    @model_validator(mode="after")
    def _params_fit_detector(self) -> Rule:
        model = DETECTOR_PARAMS.get(self.detector)
        if model is None:
            raise ValueError(f"unknown detector {self.detector!r}; known: {', '.join(sorted(DETECTOR_PARAMS))}")
        model.model_validate(self.params)
        return self

    def typed_params(self) -> Any:
        return DETECTOR_PARAMS[self.detector].model_validate(self.params)


class DataFiles(_Strict):
    markings: str
    freemail_domains: str
    registration_senders: str
    registration_subjects: str
    province_hosts: str


DomainName = Annotated[str, Field(min_length=1)]


def _check_domains(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        domain = value.strip().lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise ValueError(f"{value!r} is not a valid domain name")
        cleaned.append(domain)
    return cleaned


class Bundle(_Strict):
    schema_version: Literal[1]
    version: str = Field(min_length=1)
    decision: DecisionIdentity
    clauses: list[Clause]
    data_files: DataFiles
    local_domains: list[DomainName] = Field(min_length=1)
    province_domains: list[DomainName] = Field(default_factory=list)
    trust_anchors_dir: str | None = None
    limits: Limits = Field(default_factory=Limits)
    failure_verdict: Literal["tempfail", "accept", "quarantine"] = "tempfail"
    rules: list[Rule] = Field(min_length=1)

    _domains = field_validator("local_domains", "province_domains")(_check_domains)

    @model_validator(mode="after")
    def _consistent(self) -> Bundle:
        clause_ids = [clause.id for clause in self.clauses]
        if sorted(clause_ids) != sorted(CLAUSE_IDS):
            missing = sorted(set(CLAUSE_IDS) - set(clause_ids))
            extra = sorted({c for c in clause_ids if clause_ids.count(c) > 1})
            raise ValueError(f"clauses must be exactly {', '.join(CLAUSE_IDS)} (missing {missing}, duplicated {extra})")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


class ProvinceHost(_Strict):
    domain: str
    level: Literal["secure", "verify", "encrypt", "dane", "dane-only"] = "secure"
    match: str | None = None

    @field_validator("domain")
    @classmethod
    def _domain_ok(cls, value: str) -> str:
        return _check_domains([value])[0]


class ProvinceHosts(_Strict):
    version: str
    hosts: list[ProvinceHost] = Field(default_factory=list)


class RuleOverride(_Strict):
    action: Action | None = None
    enabled: bool | None = None
    scope: list[Direction] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class Overrides(_Strict):
    """What a site may change from its inventory, without editing the bundle."""

    local_domains: list[DomainName] | None = None
    province_domains: list[DomainName] | None = None
    trust_anchors_dir: str | None = None
    limits: dict[str, Any] = Field(default_factory=dict)
    failure_verdict: Literal["tempfail", "accept", "quarantine"] | None = None
    province_hosts: list[ProvinceHost] | None = None
    rules: dict[str, RuleOverride] = Field(default_factory=dict)

    @field_validator("local_domains", "province_domains")
    @classmethod
    def _domains_ok(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _check_domains(values)


class MarkingLevel(_Strict):
    stamp: str
    name: str
    envelope_letter: str = Field(pattern=r"^[A-Z]$")


class MarkingData(_Strict):
    version: str
    levels: list[MarkingLevel] = Field(min_length=1)
    declassified_stamp: str
    metadata_labels: list[str] = Field(min_length=1)
    not_secrecy: list[str] = Field(default_factory=list)
    #: Words that make a line naming every level an explanation ("các độ mật gồm ..."),
    #: not a marking. Never applied to a metadata field or a line of stamps alone.
    enumeration_cues: list[str] = Field(default_factory=list)
    #: Ordinary words containing "mật" ("mật khẩu"): a file name holding one is not marked,
    #: whatever its "_" separators make of it ("MAT_KHAU_wifi" -> "MẬT | KHẨU").
    ordinary_words: list[str] = Field(default_factory=list)


class SubjectPatterns(_Strict):
    """Registration intent (1.3(3)); see the comments in registration-subjects.yaml."""

    version: str
    patterns: list[str]
    body_patterns: list[str] = Field(default_factory=list)
    welcome_patterns: list[str] = Field(default_factory=list)
    account_words: list[str] = Field(default_factory=list)
    not_signup_patterns: list[str] = Field(default_factory=list)
    not_signup_senders: list[str] = Field(default_factory=list)
    government_suffixes: list[str] = Field(default_factory=lambda: ["gov.vn"])

    @field_validator("patterns", "body_patterns", "welcome_patterns", "account_words", "not_signup_patterns",
                     "not_signup_senders")
    @classmethod
    def _compile(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"subject pattern {value!r} is not a valid regular expression: {exc}") from exc
        return values
