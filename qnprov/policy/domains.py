"""Domain lists of the decision: free webmail (1.3(2)) and registration senders (1.3(3)).

The lists are versioned data files in ``qnprov/policy/data``; this module only reads
them and answers "does this domain belong to the list", subdomains included.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources

_DATA = resources.files("qnprov.policy") / "data"


def parse_domain_list(text: str) -> dict[str, str]:
    """Parse ``domain [label]`` lines; '#' starts a comment. Returns domain -> label."""
    entries: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        domain, _, label = line.partition(" ")
        if "\t" in domain:
            domain, _, label = line.partition("\t")
        entries[normalise_domain(domain)] = label.strip() or domain
    return entries


def normalise_domain(domain: str) -> str:
    """Lower-case, strip a trailing dot and IDNA-encode, so lookups compare like with like."""
    cleaned = domain.strip().strip("<>").rstrip(".").lower()
    try:
        return cleaned.encode("idna").decode("ascii")
    except UnicodeError:
        return cleaned


def domain_of(address: str) -> str:
    """The domain part of an address ('' when there is none)."""
    _, at, domain = address.strip().strip("<>").rpartition("@")
    return normalise_domain(domain) if at else ""


def match_domain(domain: str, listed: Iterable[str] | frozenset[str]) -> str | None:
    """The listed entry that ``domain`` equals or is a subdomain of, else None."""
    candidate = normalise_domain(domain)
    listed_set = listed if isinstance(listed, frozenset | set | dict) else frozenset(listed)
    while candidate:
        if candidate in listed_set:
            return candidate
        _, dot, candidate = candidate.partition(".")
        if not dot:
            return None
    return None


FREEMAIL_DOMAINS: frozenset[str] = frozenset(
    parse_domain_list((_DATA / "freemail-domains.txt").read_text(encoding="utf-8"))
)
REGISTRATION_SENDERS: dict[str, str] = parse_domain_list(
    (_DATA / "registration-senders.txt").read_text(encoding="utf-8")
)


def is_freemail(domain: str, domains: frozenset[str] = FREEMAIL_DOMAINS) -> bool:
    """True when ``domain`` (or an address's domain) is a free-webmail domain or a subdomain of one."""
    if "@" in domain:
        domain = domain_of(domain)
    return match_domain(domain, domains) is not None
