"""``qnprov policy``: show, lint, check a message offline, render the TLS policy map.

Thin edge over the engine: parse arguments, read files, print. ``check`` calls exactly
``PolicyEngine.evaluate``, the same call the milter makes.
"""

from __future__ import annotations

import json
import sys
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qnprov.errors import InputError, QnprovError
from qnprov.policy.bundle import load_policy
from qnprov.policy.engine import Envelope, PolicyEngine
from qnprov.policy.mime import decode_header_value, parse_message
from qnprov.policy.tlsmap import render_tls_policy_map

policy_app = typer.Typer(help="The decision as code: inspect the rule bundle and check messages offline.",
                         no_args_is_help=True)

BundleOption = Annotated[Path | None, typer.Option("--bundle", help="Rule bundle YAML (default: packaged).")]
OverridesOption = Annotated[Path | None, typer.Option("--overrides", help="Site overrides YAML (inventory).")]


def _fail(error: QnprovError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=error.exit_code)


@policy_app.command("show")
def show(
    bundle: BundleOption = None,
    overrides: OverridesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the merged bundle as JSON.")] = False,
) -> None:
    """Print the decision's identity and its rules as a table (or the merged bundle as JSON)."""
    try:
        policy = load_policy(bundle, overrides)
    except QnprovError as exc:
        raise _fail(exc) from exc
    if as_json:
        # The same merged data the engine runs on, for reports and the verification suite.
        document = policy.bundle.model_dump(mode="json")
        document["data_versions"] = {"markings": policy.markings.version}
        document["effective_date_computed"] = str(policy.bundle.decision.computed_effective_date or "") or None
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        return
    decision = policy.bundle.decision
    console = Console()
    unknown = ", ".join(decision.unknown_fields) or "none"
    console.print(f"[bold]{decision.title.vi}[/bold]")
    console.print(
        f"Issuer: {decision.issuer.vi} · number: {decision.number or 'unknown'} · signed: "
        f"{decision.signing_date or 'unknown'} · effective: {decision.computed_effective_date or 'unknown'} "
        f"(+{decision.effective_after_days} days) · supersedes {decision.supersedes.number} · "
        f"unknown fields: {unknown}"
    )
    domains = ", ".join(sorted(policy.local_domains))
    console.print(f"Bundle {policy.version} ({policy.source}); local domains: {domains}")
    table = Table(show_lines=False)
    for column in ("rule", "clause", "scope", "action", "detector", "on", "text"):
        table.add_column(column, overflow="fold")
    for rule in policy.bundle.rules:
        table.add_row(rule.id, rule.clause, ",".join(rule.scope), rule.action, rule.detector,
                      "yes" if rule.enabled else "no", f"{rule.vi}\n[dim]{rule.en}[/dim]")
    console.print(table)


@policy_app.command("lint")
def lint(
    bundle: Annotated[Path, typer.Argument(help="Rule bundle YAML to validate.")],
    overrides: OverridesOption = None,
) -> None:
    """Validate a bundle, its data files and optional overrides. Exit 2 when invalid."""
    try:
        policy = load_policy(bundle, overrides)
        PolicyEngine.load(bundle, overrides)
    except QnprovError as exc:
        raise _fail(exc) from exc
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
    try:
        if direction is not None and direction not in ("inbound", "outbound", "internal"):
            raise InputError(f"--direction must be inbound, outbound or internal, not {direction!r}")
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {file}: {exc.strerror}") from exc
        engine = PolicyEngine.load(bundle, overrides)
    except QnprovError as exc:
        raise _fail(exc) from exc
    header_sender, header_rcpts = _default_envelope(raw)
    envelope = Envelope(
        mail_from=mail_from if mail_from is not None else header_sender,
        rcpts=tuple(rcpt) if rcpt else tuple(header_rcpts),
        direction=direction,  # type: ignore[arg-type]
        authenticated_user=auth_user,
    )
    decision = engine.evaluate(raw, envelope)
    if as_json:
        sys.stdout.write(json.dumps(decision.to_json(), ensure_ascii=False, indent=2) + "\n")
        return
    console = Console()
    console.print(f"verdict: [bold]{decision.verdict}[/bold]  direction: {decision.direction}  "
                  f"policy: {decision.policy_version}")
    for finding in decision.findings:
        console.print(f"- {finding.rule} [{finding.clause}] {finding.action} @ {finding.location}: "
                      f"{finding.evidence}", markup=False, highlight=False)
    for name, value in decision.add_headers:
        console.print(f"+ {name}: {value}", markup=False, highlight=False)
    if decision.reply:
        console.print("reply: " + " ".join(decision.reply), markup=False, highlight=False)


@policy_app.command("tls-map")
def tls_map(
    bundle: BundleOption = None,
    overrides: OverridesOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Render the Postfix smtp_tls_policy_maps table for the province's other hosts."""
    try:
        policy = load_policy(bundle, overrides)
    except QnprovError as exc:
        raise _fail(exc) from exc
    text = render_tls_policy_map(policy.province_hosts, version=policy.version)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


