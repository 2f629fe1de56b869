"""The edge of DNS record building: the deployed DKIM key and host certificate, and the
``mta-sts-policy`` command the ``mta_sts`` role runs on the controller.

The records themselves are built in :mod:`qnprov.dns` (pure); this module only reads
what they are built from, and prints the MTA-STS policy text with its id.
"""

from __future__ import annotations

import json

from qnprov.dns import MTA_STS_MAX_AGE, check_domain, mta_sts_policy, mta_sts_policy_id
from qnprov.errors import ConfigError, InputError

DKIM_DIR = "/var/lib/rspamd/dkim"


def read_host_material(backend: str, domain: str, cert_path: str, *, sudo: bool = False) -> tuple[str | None, bytes]:
    """The deployed DKIM TXT for ``domain`` and the host certificate, read through testinfra."""
    import testinfra

    domain = check_domain(domain)
    host = testinfra.get_host(backend, sudo=sudo)
    listing = host.run(f"find {DKIM_DIR} -maxdepth 1 -name '{domain}.*.txt' -type f")
    files = sorted(listing.stdout.split())
    dkim_text = host.file(files[0]).content_string if files else None
    cert = host.file(cert_path)
    if not cert.exists:
        raise ConfigError(f"{backend}: certificate {cert_path} does not exist")
    return dkim_text, cert.content


def main(argv: list[str] | None = None) -> int:
    """``python -m qnprov.controls.dns mta-sts-policy [--mode enforce|testing] MX...``.

    Prints ``{"policy": TEXT, "id": ID}``; roles/mta_sts publishes exactly TEXT, so
    the ``_mta-sts`` TXT id that ``qnprov dns records`` prints matches what is served.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m qnprov.controls.dns")
    parser.add_argument("what", choices=["mta-sts-policy"])
    parser.add_argument("--mode", choices=["enforce", "testing"], default="enforce")
    parser.add_argument("--max-age", type=int, default=MTA_STS_MAX_AGE)
    parser.add_argument("mx", nargs="+")
    args = parser.parse_args(argv)
    try:
        mx_hosts = tuple(check_domain(mx) for mx in args.mx)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    policy = mta_sts_policy(mx_hosts, args.mode, args.max_age)
    sys.stdout.write(json.dumps({"policy": policy, "id": mta_sts_policy_id(policy)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
