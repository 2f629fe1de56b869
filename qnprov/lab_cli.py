"""``qnprov lab ...``: the local lab, the production roles on systemd containers.

Thin over :mod:`qnprov.lab`: read the lab inventory, drive podman and the site
playbook, print through :mod:`qnprov.cliout`.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from qnprov import cliout, lab, labcheck, labdrill, paths, testbed
from qnprov.cliout import JsonOpt, err, out, print_json
from qnprov.ui import host_table, report_failures, run_site

lab_app = typer.Typer(help="The local lab: the production roles on systemd containers.", no_args_is_help=True)

LabInventoryOpt = Annotated[str | None, typer.Option(
    "-i", "--inventory", help="Lab inventory name or path (default: $QNPROV_LAB_INVENTORY, else lab).")]


def _lab_config(inventory: str | None) -> lab.LabConfig:
    return lab.load_lab_config(paths.resolve_inventory(inventory) if inventory else None)


def _print_summary(config: lab.LabConfig, doc: dict[str, object], timings: dict[str, float]) -> None:
    table = Table(title="qnprov lab", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for host in config.hosts:
        prefix = f"{host.name} " if len(config.hosts) > 1 else ""
        for name, endpoint in config.endpoints(host).items():
            table.add_row(prefix + name, endpoint)
    table.add_row("domain", config.domain)
    table.add_row("accounts", ", ".join(a.address for a in config.accounts))
    table.add_row("passwords", "qnprov lab status --json")
    table.add_row("lab CA", str(config.ca_cert))
    table.add_row("timings", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    out.print(table)


@lab_app.command("up")
def lab_up(
    rebuild_image: Annotated[bool, typer.Option("--rebuild-image", help="Rebuild the base image.")] = False,
    skip_smoke: Annotated[bool, typer.Option("--skip-smoke", help="Do not run the smoke test.")] = False,
    inventory: LabInventoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the image if needed, start the lab hosts, deploy, seed and smoke-test."""
    config = _lab_config(inventory)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with err.status("preparing podman on this host"):
        testbed.prepare_host()
    timings["host"] = time.monotonic() - started
    mark = time.monotonic()
    with err.status("base image"):
        built = testbed.build_image(force=rebuild_image, progress=lambda m: err.log(m))
    timings["image"] = time.monotonic() - mark
    if built:
        err.log(f"built {testbed.IMAGE_REF} (version {testbed.IMAGE_VERSION})")
    mark = time.monotonic()
    lab.ensure_secrets(config)
    if config.network and lab.ensure_network(config.network):
        err.log(f"created lab network {config.network.name} ({config.network.subnet})")
    started_fresh = []
    for host in config.hosts:
        started_fresh.append(lab.ensure_container(host))
        if started_fresh[-1]:
            err.log(f"started container {host.container}")
    timings["containers"] = time.monotonic() - mark
    mark = time.monotonic()
    result = run_site(config.inventory, label="lab converge", show_progress=not as_json)
    timings["converge"] = time.monotonic() - mark
    if not as_json:
        out.print(host_table(result.hosts, title="converge"))
    if result.failed:
        report_failures(result)
        cliout.finish(ok=False)
    doc = labcheck.status(config)
    if not skip_smoke:
        mark = time.monotonic()
        # Through every host's MTA and IMAP in turn: each must carry mail on its own.
        smokes = labcheck.smoke_all(config)
        timings["smoke"] = time.monotonic() - mark
        doc["smoke"] = {"sender": smokes[0].sender, "recipient": smokes[0].recipient,
                        "delivery_seconds": round(max(s.delivery_seconds for s in smokes), 2),
                        "hosts": [{"host": s.host, "delivery_seconds": round(s.delivery_seconds, 2)}
                                  for s in smokes]}
    timings["total"] = time.monotonic() - started
    doc["timings"] = {k: round(v, 1) for k, v in timings.items()}
    doc["changed"] = sum(h.changed for h in result.hosts.values())
    # A first converge (every container new) or a re-converge: benchmarks compare only like with like.
    doc["first_converge"] = all(started_fresh)
    labcheck.write_status_file(config, doc)
    if as_json:
        print_json(doc)
    else:
        _print_summary(config, doc, timings)


@lab_app.command("status")
def lab_status(inventory: LabInventoryOpt = None, as_json: JsonOpt = False) -> None:
    """Show the lab's endpoints, accounts and service states."""
    config = _lab_config(inventory)
    doc = labcheck.status(config)
    if as_json:
        print_json(doc)
        return
    table = Table(title=f"qnprov lab ({'running' if doc['running'] else 'not running'})", title_justify="left")
    table.add_column("host")
    table.add_column("container")
    table.add_column("services")
    for host in doc["hosts"]:
        table.add_row(host["name"], f"{host['container']} ({host['state']})",
                      " ".join(f"{k}={v}" for k, v in host["services"].items()))
    out.print(table)
    for host in doc["hosts"]:
        prefix = f"{host['name']} " if len(doc["hosts"]) > 1 else ""
        for name, endpoint in host["endpoints"].items():
            out.print(f"  {prefix + name:16} {endpoint}")
    out.print(f"  CA           {doc['ca_cert']}")


@lab_app.command("smoke")
def lab_smoke(inventory: LabInventoryOpt = None, as_json: JsonOpt = False) -> None:
    """Submit a message as one demo account and fetch it over IMAP as another, through each host."""
    config = _lab_config(inventory)
    results = labcheck.smoke_all(config)
    first = results[0]
    doc = {"ok": True, "sender": first.sender, "recipient": first.recipient,
           "submit_seconds": round(max(r.submit_seconds for r in results), 2),
           "delivery_seconds": round(max(r.delivery_seconds for r in results), 2),
           "hosts": [{"host": r.host, "submit_seconds": round(r.submit_seconds, 2),
                      "delivery_seconds": round(r.delivery_seconds, 2)} for r in results]}
    if as_json:
        print_json(doc)
    else:
        for result in results:
            out.print(f"smoke ok through {result.host}: {result.sender} -> {result.recipient} "
                      f"(submitted in {result.submit_seconds:.2f}s, in INBOX after {result.delivery_seconds:.2f}s)")


@lab_app.command("drill")
def lab_drill(
    inventory: LabInventoryOpt = None, as_json: JsonOpt = False,
    drill: Annotated[list[str] | None, typer.Option(
        "--drill", help=f"Run only this drill (repeatable): {', '.join(labdrill.DRILLS)}.")] = None,
    rate: Annotated[float, typer.Option("--rate", min=0.5, max=20, help="Messages per second of the streams.")] = 20.0,
    duration: Annotated[float, typer.Option("--duration", min=10, max=120, help="Seconds each stream lasts.")] = 60.0,
) -> None:
    """Failure drills on a multi-host lab (lab-ha); exits non-zero when any drill fails."""
    results = labdrill.run(_lab_config(inventory), drill or list(labdrill.DRILLS), rate=rate, duration=duration)
    if as_json:
        print_json([r.as_dict() for r in results])
    else:
        for r in results:
            out.print(f"{r.name}: {'passed' if r.passed else 'FAILED'} sent {r.sent} accepted {r.accepted} "
                      f"delivered {r.delivered} duplicates {r.duplicates} bounced {r.bounced} lost {r.lost} "
                      + " ".join(f"{k}={v if v is None else round(v, 2)}" for k, v in r.timings.items())
                      + (f" error: {r.error}" if r.error else ""))
    cliout.finish(ok=all(r.passed for r in results))


@lab_app.command("down")
def lab_down(purge: Annotated[bool, typer.Option(
        "--purge", help="Also delete secrets, CA and state, and the lab network.")] = False,
             inventory: LabInventoryOpt = None) -> None:
    """Remove the lab containers (and with --purge, its network and state)."""
    config = _lab_config(inventory)
    removed = lab.down(config, purge=purge)
    out.print(f"removed: {', '.join(removed) or 'nothing'}" + (f"; purged {config.state}" if purge else ""))
