"""The edge of DNS record building: the deployed DKIM key and host certificate.

The records themselves are built in :mod:`qnprov.dns` (pure); this module only reads
what they are built from. The MTA-STS policy the ``mta_sts`` role publishes comes
from ``qnprov dns mta-sts-policy`` (:mod:`qnprov.controls.cli`).
"""

from __future__ import annotations

import json

from qnprov.dns import check_domain
from qnprov.errors import ConfigError

DKIM_DIR = "/var/lib/rspamd/dkim"
#: Written by ``qnprov push dkim rotate`` (qnprov/push/dkim.py): each rotated domain's active selector.
DKIM_STATE = "qnprov-dkim.json"


def read_host_material(backend: str, domain: str, cert_path: str, *, sudo: bool = False) -> tuple[str | None, bytes]:
    """The deployed DKIM TXT for ``domain`` and the host certificate, read through testinfra."""
    import testinfra

    domain = check_domain(domain)
    host = testinfra.get_host(backend, sudo=sudo)
    listing = host.run(f"find {DKIM_DIR} -maxdepth 1 -name '{domain}.*.txt' -type f")
    files = sorted(listing.stdout.split())
    # After `qnprov push dkim rotate --activate` several selectors' files are there: the
    # one that signs is the rotation state's (the file roles/rspamd reads as well).
    state = host.file(f"{DKIM_DIR}/{DKIM_STATE}")
    if state.exists:
        try:
            active = json.loads(state.content_string)["domains"][domain]["active"]
        except (ValueError, KeyError, TypeError):
            active = None
        chosen = f"{DKIM_DIR}/{domain}.{active}.txt"
        if active and chosen in files:
            files = [chosen]
    dkim_text = host.file(files[0]).content_string if files else None
    cert = host.file(cert_path)
    if not cert.exists:
        raise ConfigError(f"{backend}: certificate {cert_path} does not exist")
    return dkim_text, cert.content
