"""Free-webmail domains (clause 1.3(2)): the policy package's list when it exists.

``qnprov.policy.domains`` owns the list; it is imported lazily so the directory code
also works in a checkout without it, falling back to ``data/freemail.txt``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from importlib import resources


@cache
def _fallback_domains() -> frozenset[str]:
    text = (resources.files("qnprov.directory") / "data" / "freemail.txt").read_text(encoding="utf-8")
    return frozenset(line.split("#", 1)[0].strip().lower() for line in text.splitlines()
                     if line.split("#", 1)[0].strip())


def _fallback_is_freemail(domain: str) -> bool:
    candidate = domain.strip().rstrip(".").lower()
    listed = _fallback_domains()
    while candidate:
        if candidate in listed:
            return True
        _, dot, candidate = candidate.partition(".")
        if not dot:
            return False
    return False


@cache
def freemail_checker() -> Callable[[str], bool]:
    try:
        policy_domains = importlib.import_module("qnprov.policy.domains")
    except ImportError:
        return _fallback_is_freemail
    check = getattr(policy_domains, "is_freemail", None)
    return check if callable(check) else _fallback_is_freemail


def is_freemail(domain: str) -> bool:
    """True when ``domain`` is a free-webmail domain or a subdomain of one."""
    return freemail_checker()(domain)
