"""Molecule's verify step: the integration suites and the control suite against a molecule host.

Molecule creates the container and converges it; this runs the same pytest
modules the lab runs, pointed at the molecule container and its ports, then the
packaged control suite of ``qnprov verify`` (without the external scanners).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from qnprov import lab, paths

ROLE_SUITES = (
    "tests/integration/test_mailflow.py",
    "tests/integration/test_openldap_role.py",
    "tests/integration/test_rspamd_os_roles.py",
    "tests/integration/test_policy_lab.py",
)


def missing_suites(root: Path | None = None) -> list[str]:
    """The entries of ROLE_SUITES that are not files under the project root."""
    base = root or paths.PROJECT_ROOT
    return [suite for suite in ROLE_SUITES if not (base / suite).is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True, help="container name of the molecule host")
    parser.add_argument("--state", required=True, type=Path, help="QNPROV_STATE_DIR molecule used")
    parser.add_argument("--port-base", type=int, default=20000)
    args = parser.parse_args(argv)
    missing = missing_suites()
    if missing:
        # A suite that is not there would otherwise be a verify step that checks less and
        # still passes: fail, and name what is missing.
        print(f"molecule verify: integration suite(s) missing under {paths.PROJECT_ROOT}: "
              + ", ".join(missing), file=sys.stderr)
        return 1
    base = lab.load_lab_config()
    config = lab.with_port_base(base, containers={h.name: args.host for h in base.hosts},
                                port_base=args.port_base, state=args.state)
    env = {**os.environ, **lab.test_environment(config)}
    suites = list(ROLE_SUITES)
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites],
                         cwd=paths.PROJECT_ROOT, env=env)
    # The same control suite `qnprov verify` runs, keyed by control ID. The external
    # scanners (testssl.sh, Lynis) are left to `qnprov verify` on the lab: minutes each.
    from qnprov.controls.catalogue import load_catalogue
    from qnprov.controls.verify import verify_lab_config
    from qnprov.controls.waivers import load_waivers

    waivers = load_waivers(paths.PROJECT_ROOT / "tests" / "integration" / "lab-waivers.yml", load_catalogue())
    report = verify_lab_config(config, scanners=False, waivers=waivers)
    for control in report.controls:
        if control.status in ("fail", "error"):
            print(f"molecule verify: {control.id} {control.status}: {control.detail[:400]}", file=sys.stderr)
    print(f"molecule verify: controls {report.summary}")
    return rc or (0 if report.ok else 1)


if __name__ == "__main__":
    sys.exit(main())
