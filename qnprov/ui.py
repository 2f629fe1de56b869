"""Site playbook runs for the CLI: validation, progress and host tables (printed through :mod:`qnprov.cliout`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from qnprov import argspec, paths, runner, topology
from qnprov.cliout import err
from qnprov.runner import HostStats, PlaybookResult, ProgressEvent


def host_table(hosts: dict[str, HostStats], title: str = "Hosts") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("host", "ok", "changed", "failed", "unreachable"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for name, stats in sorted(hosts.items()):
        bad = stats.failed or stats.unreachable
        table.add_row(name, str(stats.ok), str(stats.changed), str(stats.failed), str(stats.unreachable),
                      style="red" if bad else ("yellow" if stats.changed else None))
    return table


class PlaybookProgress:
    """A live progress bar fed by runner events, with running per-host counts.

    The total is the task count of the previous run of the same playbook when
    known (kept in the state dir), so the bar is honest from the second run on.
    """

    def __init__(self, label: str, *, estimate_file: Path | None = None, enabled: bool = True) -> None:
        self.estimate_file = estimate_file
        total = None
        if estimate_file and estimate_file.is_file():
            try:
                total = int(estimate_file.read_text().strip()) or None
            except ValueError:
                total = None
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[current]}", style="dim"),
            console=err, transient=False, disable=not enabled,
        )
        self.task_id = self.progress.add_task(label, total=total, current="")
        self.hosts: dict[str, HostStats] = {}
        self.started = 0
        self.enabled = enabled
        self.live: Live | None = None

    def _render(self) -> Group:
        return Group(self.progress, host_table(self.hosts, title="") if self.hosts else "")

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "task":
            self.started += 1
            task = self.progress.tasks[0]
            if task.total is not None and self.started > task.total:
                self.progress.update(self.task_id, total=self.started)
            self.progress.update(self.task_id, completed=self.started, current=event.task[:60])
        elif event.host and event.kind in {"ok", "changed", "failed", "skipped", "unreachable"}:
            stats = self.hosts.setdefault(event.host, HostStats())
            if event.kind == "changed":
                stats.ok += 1
                stats.changed += 1
            else:
                setattr(stats, event.kind, getattr(stats, event.kind) + 1)
        if self.live:
            self.live.update(self._render())

    @contextmanager
    def running(self) -> Iterator[PlaybookProgress]:
        if not self.enabled:
            yield self
            return
        with Live(self._render(), console=err, refresh_per_second=8, transient=True) as live:
            self.live = live
            yield self
        self.live = None

    def finish(self, result: PlaybookResult) -> None:
        if self.estimate_file and result.tasks_started and result.rc == 0:
            self.estimate_file.parent.mkdir(parents=True, exist_ok=True)
            self.estimate_file.write_text(str(result.tasks_started))


def report_failures(result: PlaybookResult) -> None:
    for failure in result.failures[:20]:
        err.print(f"[red]FAILED[/red] {failure.host}: {failure.task}: {failure.message}")


def run_site(inventory: Path, *, check: bool = False, diff: bool = False, limit: str | None = None,
             tags: str | None = None, show_progress: bool = True, label: str = "deploy",
             vault_password_file: Path | None = None) -> runner.PlaybookResult:
    """Check the inventory's topology (qnprov.topology) and its variables against the roles'
    specs, then run the site playbook. Either check refuses in one line before anything runs."""
    topology.require_valid_topology(inventory)
    argspec.require_valid_inventory(inventory, paths.SITE_PLAYBOOK, limit=limit)
    estimate = paths.state_dir().parent / f"tasks-{inventory.name}.count"
    progress = PlaybookProgress(label, estimate_file=estimate, enabled=show_progress)
    with progress.running():
        result = runner.run_playbook(paths.SITE_PLAYBOOK, inventory=inventory, check=check, diff=diff,
                                     limit=limit, tags=tags, on_event=progress,
                                     vault_password_file=vault_password_file)
    if not check:
        progress.finish(result)
    return result
