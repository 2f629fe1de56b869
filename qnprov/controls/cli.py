"""Command line for controls: ``qnprov verify``, ``qnprov report traceability``,
``qnprov dns records`` and ``qnprov dns mta-sts-policy``.

The root CLI mounts ``verify_command`` as a command and ``report_app`` and
``dns_app`` as sub-apps. Every user mistake ends as one line on stderr and its
exit code (:mod:`qnprov.cliout`); verify exits 1 on any fail or error.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from qnprov import dns as dnsmod
from qnprov.cliout import finish, out, print_json, user_errors
from qnprov.controls import reports, traceability
from qnprov.controls.catalogue import load_catalogue
from qnprov.controls.dns import DKIM_DIR, read_host_material
from qnprov.controls.target import VerifyTarget
from qnprov.controls.verify import (
    DEFAULT_RESULTS_FILE,
    build_targets,
    read_results_file,
    verify,
    write_results_file,
)
from qnprov.controls.waivers import WaiverSet, load_waivers
from qnprov.dns import MTA_STS_MAX_AGE
from qnprov.errors import ConfigError

report_app = typer.Typer(help="Audit reports.", no_args_is_help=True)
#: Where the common role puts the host certificate chain (qnprov_tls_cert_file).
HOST_CERT_PATH = "/etc/qnprov/tls/fullchain.pem"

dns_app = typer.Typer(help="DNS records the hosted domains must publish.", no_args_is_help=True)


class _ModeChoice(enum.StrEnum):
    enforce = "enforce"
    testing = "testing"


def _resolve_inventory(name_or_path: str) -> Path:
    from qnprov import paths

    return paths.resolve_inventory(name_or_path)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def verify_command(
    inventory: Annotated[str, typer.Option("-i", "--inventory", help="Inventory name (lab) or path.")],
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML audit report here.")] = None,
    waivers: Annotated[Path | None, typer.Option("--waivers", help="YAML waivers file.")] = None,
    no_scanners: Annotated[bool, typer.Option("--no-scanners", help="Skip testssl.sh and Lynis.")] = False,
    results: Annotated[Path, typer.Option("--results", help="Where to keep results for traceability.")]
    = DEFAULT_RESULTS_FILE,
) -> None:
    """Verify every host of an inventory against the control catalogue."""
    with user_errors():
        catalogue = load_catalogue()
        waiver_set = load_waivers(waivers, catalogue) if waivers else WaiverSet()
        inventory_path = _resolve_inventory(inventory)
        targets = build_targets(inventory_path)
        report = verify(targets, waivers=waiver_set, scanners=not no_scanners, inventory=str(inventory),
                        catalogue=catalogue)
        write_results_file(report, results)
        if junit:
            _write(junit, reports.render_junit(report))
        if html:
            _write(html, reports.render_html(report, catalogue))
    if as_json:
        print_json(report.public())
    else:
        _print_summary(report)
    finish(report.ok)


def _print_summary(report: reports.VerifyReport) -> None:
    table = Table(title=f"qnprov verify — {report.inventory}")
    for column in ("control", "clause", "status", "detail"):
        table.add_column(column)
    colours = {"pass": "green", "fail": "red", "waived": "yellow", "error": "magenta"}
    for control in report.controls:
        table.add_row(control.id, control.clause, f"[{colours[control.status]}]{control.status}[/]",
                      control.detail[:160])
    out.print(table)
    out.print(f"summary: {report.summary}  metrics: lynis={report.metrics['lynis_hardening_index']}  "
                  f"durations: {report.durations}")


@report_app.callback()
def _report_group() -> None:
    """Audit reports (a callback keeps ``traceability`` a named sub-command)."""


@dns_app.callback()
def _dns_group() -> None:
    """DNS records (a callback keeps ``records`` a named sub-command)."""


@report_app.command("traceability")
def traceability_command(
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML matrix here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matrix as JSON.")] = False,
    results: Annotated[Path, typer.Option("--results", help="verify's results file.")] = DEFAULT_RESULTS_FILE,
    tests_dir: Annotated[Path | None, typer.Option("--tests-dir", help="Test tree to search for rule tests.")]
    = None,
) -> None:
    """Each decision clause with its rules, controls, settings, tests and latest result."""
    from qnprov import paths

    with user_errors():
        texts, rules, bundle = traceability.load_rules()
        tests_root = tests_dir or paths.PROJECT_ROOT / "tests"
        rule_tests = traceability.find_rule_tests([r.id for r in rules], tests_root)
        last = read_results_file(results) if results.exists() else None
        matrix = traceability.build_matrix(load_catalogue(), texts, rules, rule_tests, last)
        if html:
            _write(html, traceability.render_html(matrix, bundle=bundle,
                                                  verify_at=last.generated_at if last else None))
    if as_json:
        doc = {"bundle": bundle, "verify": {"generated_at": last.generated_at, "inventory": last.inventory}
               if last else None, "clauses": [t.as_dict() for t in matrix]}
        print_json(doc)
    else:
        typer.echo(traceability.render_text(matrix))


@dns_app.command("records")
def dns_records_command(
    domain: Annotated[list[str] | None, typer.Option("--domain", help="Domain (repeatable); default: all hosted.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of zone-file text.")] = False,
    inventory: Annotated[str | None, typer.Option("-i", "--inventory", help="Read keys and certs from its hosts.")]
    = None,
    dkim_file: Annotated[Path | None, typer.Option("--dkim-file", help="rspamd DKIM .txt (or PEM public key).")]
    = None,
    dkim_selector: Annotated[str | None, typer.Option("--dkim-selector", help="Selector for a PEM key.")] = None,
    cert_file: Annotated[Path | None, typer.Option("--cert-file", help="Host certificate (PEM) for TLSA.")] = None,
    mx: Annotated[list[str] | None, typer.Option("--mx", help="MX host name (repeatable).")] = None,
    dmarc_policy: Annotated[str, typer.Option("--dmarc-policy", help="quarantine or reject.")] = "quarantine",
    mta_sts_mode: Annotated[str, typer.Option("--mta-sts-mode", help="enforce or testing.")] = "enforce",
    report_mailbox: Annotated[str | None, typer.Option("--report-mailbox", help="rua address.")] = None,
) -> None:
    """Print MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, TLSA and client-autoconfiguration records (CNAME, SRV)."""
    with user_errors():
        if dmarc_policy not in ("quarantine", "reject"):
            raise ConfigError(f"--dmarc-policy {dmarc_policy!r}: must be quarantine or reject")
        if mta_sts_mode not in ("enforce", "testing"):
            raise ConfigError(f"--mta-sts-mode {mta_sts_mode!r}: must be enforce or testing")
        per_domain = _dns_for(domain or [], inventory, dkim_file, dkim_selector, cert_file, mx or [],
                              dmarc_policy, mta_sts_mode, report_mailbox)
    if as_json:
        typer.echo(dnsmod.records_json(per_domain))
    else:
        for name, (records, policy) in per_domain.items():
            typer.echo(f"; ---- {name}")
            typer.echo(dnsmod.render_zone(records), nl=False)
            typer.echo(f"; MTA-STS policy file for https://mta-sts.{name}/.well-known/mta-sts.txt:")
            typer.echo("".join(f";   {line}\n" for line in policy.splitlines()), nl=False)


@dns_app.command("mta-sts-policy")
def mta_sts_policy_command(
    mx: Annotated[list[str], typer.Argument(help="MX host names the policy allows.")],
    mode: Annotated[_ModeChoice, typer.Option("--mode", help="enforce or testing.")] = _ModeChoice.enforce,
    max_age: Annotated[int, typer.Option("--max-age", help="Policy max_age in seconds.")] = MTA_STS_MAX_AGE,
) -> None:
    """Print {"policy": TEXT, "id": ID}: the MTA-STS policy file and its _mta-sts TXT id.

    roles/mta_sts runs this on the controller and publishes exactly TEXT, so the id
    ``qnprov dns records`` announces matches what is served.
    """
    with user_errors():
        mx_hosts = tuple(dnsmod.check_domain(name) for name in mx)
    policy = dnsmod.mta_sts_policy(mx_hosts, cast(dnsmod.MtaStsMode, mode.value), max_age)
    print_json({"policy": policy, "id": dnsmod.mta_sts_policy_id(policy)}, indent=None)


def _dns_for(domains: list[str], inventory: str | None, dkim_file: Path | None, selector: str | None,
             cert_file: Path | None, mx: list[str], dmarc_policy: str, mode: str,
             report_mailbox: str | None) -> dict[str, tuple[list[dnsmod.DnsRecord], str]]:
    mx_hosts = tuple(mx)
    readers: list[Callable[[str], tuple[str | None, bytes | None]]] = []
    if inventory:
        targets = build_targets(_resolve_inventory(inventory))
        domains = domains or sorted({d for t in targets for d in (t.hosted_domains or [t.domain])})
        mx_hosts = mx_hosts or tuple(t.mail_hostname for t in targets)
        for target in targets:
            def read(name: str, target: VerifyTarget = target) -> tuple[str | None, bytes | None]:
                return read_host_material(target.backend, name, HOST_CERT_PATH, sudo=target.sudo)
            readers.append(read)
    else:
        def read_files(name: str) -> tuple[str | None, bytes | None]:
            dkim = dkim_file.read_text(encoding="utf-8") if dkim_file else None
            return dkim, cert_file.read_bytes() if cert_file else None
        readers.append(read_files)
    if not domains:
        raise ConfigError("give --domain or -i INVENTORY")
    if not mx_hosts:
        raise ConfigError("give --mx HOST or -i INVENTORY")
    result = {}
    for raw in domains:
        name = dnsmod.check_domain(raw)
        try:
            material = [read(name) for read in readers]
        except OSError as exc:
            raise ConfigError(f"cannot read key material: {exc}") from exc
        dkim_text = next((dkim for dkim, _ in material if dkim), None)
        if dkim_text is None:
            raise ConfigError(f"no deployed DKIM key for {name} (expected {DKIM_DIR}/{name}.<selector>.txt)")
        # One certificate per MX host, in the same order (a single --cert-file serves every --mx).
        certs = [cert for _, cert in material]
        digests = {}
        for index, host in enumerate(mx_hosts):
            cert = certs[min(index, len(certs) - 1)]
            if cert:
                digests[host] = dnsmod.spki_sha256(cert)
        mail = dnsmod.DomainMail(domain=name, mx_hosts=mx_hosts,
                                 dkim=dnsmod.parse_dkim_txt(dkim_text, selector_hint=selector),
                                 tlsa_sha256=digests, report_mailbox=report_mailbox or f"postmaster@{name}",
                                 dmarc_policy=dmarc_policy,  # type: ignore[arg-type]
                                 mta_sts_mode=mode)  # type: ignore[arg-type]
        result[name] = (dnsmod.build_records(mail), dnsmod.mta_sts_policy(mx_hosts, mail.mta_sts_mode))
    return result
