"""``qnprov policy``: show, lint, check a message offline, render the TLS policy map and
the free-mail tables.

Thin edge over the engine: parse arguments, read files, print. ``check`` calls exactly
``PolicyEngine.evaluate``, the same call the milter makes.
"""

from __future__ import annotations

import enum
import sys
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qnprov.cliout import out, print_json, user_errors
from qnprov.errors import InputError
from qnprov.policy import forwarding
from qnprov.policy.bundle import load_policy
from qnprov.policy.engine import Envelope, PolicyEngine
from qnprov.policy.mime import decode_header_value, parse_message
from qnprov.policy.tlsmap import render_tls_policy_map

policy_app = typer.Typer(help="The decision as code: inspect the rule bundle and check messages offline.",
                         no_args_is_help=True)

BundleOption = Annotated[Path | None, typer.Option("--bundle", help="Rule bundle YAML (default: packaged).")]
OverridesOption = Annotated[Path | None, typer.Option("--overrides", help="Site overrides YAML (inventory).")]


@policy_app.command("show")
def show(
    bundle: BundleOption = None,
    overrides: OverridesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the merged bundle as JSON.")] = False,
) -> None:
    """Print the decision's identity and its rules as a table (or the merged bundle as JSON)."""
    with user_errors():
        policy = load_policy(bundle, overrides)
    if as_json:
        # The same merged data the engine runs on, for reports and the verification suite.
        document = policy.bundle.model_dump(mode="json")
        document["data_versions"] = {"markings": policy.markings.version}
        document["effective_date_computed"] = str(policy.bundle.decision.computed_effective_date or "") or None
        print_json(document)
        return
    decision = policy.bundle.decision
    unknown = ", ".join(decision.unknown_fields) or "none"
    out.print(f"[bold]{decision.title.vi}[/bold]")
    out.print(
        f"Issuer: {decision.issuer.vi} · number: {decision.number or 'unknown'} · signed: "
        f"{decision.signing_date or 'unknown'} · effective: {decision.computed_effective_date or 'unknown'} "
        f"(+{decision.effective_after_days} days) · supersedes {decision.supersedes.number} · "
        f"unknown fields: {unknown}"
    )
    domains = ", ".join(sorted(policy.local_domains))
    out.print(f"Bundle {policy.version} ({policy.source}); local domains: {domains}")
    table = Table(show_lines=False)
    for column in ("rule", "clause", "scope", "action", "detector", "on", "text"):
        table.add_column(column, overflow="fold")
    for rule in policy.bundle.rules:
        table.add_row(rule.id, rule.clause, ",".join(rule.scope), rule.action, rule.detector,
                      "yes" if rule.enabled else "no", f"{rule.vi}\n[dim]{rule.en}[/dim]")
    out.print(table)


@policy_app.command("lint")
def lint(
    bundle: Annotated[Path, typer.Argument(help="Rule bundle YAML to validate.")],
    overrides: OverridesOption = None,
) -> None:
    """Validate a bundle, its data files and optional overrides. Exit 2 when invalid."""
    with user_errors():
        policy = load_policy(bundle, overrides)
        PolicyEngine.load(bundle, overrides)
    enabled = sum(1 for rule in policy.bundle.rules if rule.enabled)
    typer.echo(f"ok: bundle {policy.version}, {len(policy.bundle.rules)} rules ({enabled} enabled)")


def _default_envelope(raw: bytes) -> tuple[str, list[str]]:
    message = parse_message(raw)
    _, sender = parseaddr(decode_header_value(message.get("Return-Path") or message.get("From")))
    rcpts = [address for _, address in getaddresses(
        [decode_header_value(value) for value in (message.get_all("To") or []) + (message.get_all("Cc") or [])]
    ) if address]
    return sender, rcpts


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Message file (RFC 5322, .eml).")],
    mail_from: Annotated[str | None, typer.Option("--mail-from", help="Envelope sender (default: From).")] = None,
    rcpt: Annotated[list[str] | None, typer.Option("--rcpt", help="Envelope recipient (repeatable).")] = None,
    direction: Annotated[str | None, typer.Option("--direction",
                                                  help="inbound|outbound|internal (default: derived)")] = None,
    auth_user: Annotated[str | None, typer.Option("--auth-user", help="SASL login of the sender.")] = None,
    bundle: BundleOption = None,
    overrides: OverridesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Give the milter's decision for a message, without a server. Exit 0 for any verdict."""
    with user_errors():
        if direction is not None and direction not in ("inbound", "outbound", "internal"):
            raise InputError(f"--direction must be inbound, outbound or internal, not {direction!r}")
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {file}: {exc.strerror}") from exc
        engine = PolicyEngine.load(bundle, overrides)
    header_sender, header_rcpts = _default_envelope(raw)
    envelope = Envelope(
        mail_from=mail_from if mail_from is not None else header_sender,
        rcpts=tuple(rcpt) if rcpt else tuple(header_rcpts),
        direction=direction,  # type: ignore[arg-type]
        authenticated_user=auth_user,
    )
    decision = engine.evaluate(raw, envelope)
    if as_json:
        print_json(decision.to_json())
        return
    out.print(f"verdict: [bold]{decision.verdict}[/bold]  direction: {decision.direction}  "
                  f"policy: {decision.policy_version}")
    for finding in decision.findings:
        out.print(f"- {finding.rule} [{finding.clause}] {finding.action} @ {finding.location}: "
                      f"{finding.evidence}", markup=False, highlight=False)
    for name, value in decision.add_headers:
        out.print(f"+ {name}: {value}", markup=False, highlight=False)
    if decision.reply:
        out.print("reply: " + " ".join(decision.reply), markup=False, highlight=False)


@policy_app.command("tls-map")
def tls_map(
    bundle: BundleOption = None,
    overrides: OverridesOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Render the Postfix smtp_tls_policy_maps table for the province's other hosts."""
    with user_errors():
        policy = load_policy(bundle, overrides)
    text = render_tls_policy_map(policy.province_hosts, version=policy.version)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


class _FreemailOutput(enum.StrEnum):
    postfix_tables = "postfix-tables"
    regexp = "regexp"
    ldap_exclusion = "ldap-exclusion"
    ldap_query = "ldap-query"
    ldap_info_query = "ldap-info-query"
    domains = "domains"


@policy_app.command("freemail")
def freemail(
    what: Annotated[_FreemailOutput, typer.Argument(metavar="WHAT",
                                                    help="What to print; postfix-tables is one JSON document.")],
    extra: Annotated[list[str] | None, typer.Argument(metavar="[EXTRA_DOMAIN]...",
                                                      help="Free-mail domains beyond the packaged list.")] = None,
) -> None:
    """Print the clause 1.3(2) free-mail list or a Postfix/LDAP table generated from it.

    roles/postfix runs ``qnprov policy freemail postfix-tables`` on the controller.
    """
    with user_errors():
        text = forwarding.render(what.value, forwarding.freemail_domains(extra or []))
    sys.stdout.write(text)
