"""Terminal output shared by the CLI commands: progress for playbooks, host tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from qnprov.runner import HostStats, PlaybookResult, ProgressEvent

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def print_json(data: Any) -> None:
    """Machine output goes to stdout alone, one document, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    sys.stdout.flush()


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
            console=console, transient=False, disable=not enabled,
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
        with Live(self._render(), console=console, refresh_per_second=8, transient=True) as live:
            self.live = live
            yield self
        self.live = None

    def finish(self, result: PlaybookResult) -> None:
        if self.estimate_file and result.tasks_started and result.rc == 0:
            self.estimate_file.parent.mkdir(parents=True, exist_ok=True)
            self.estimate_file.write_text(str(result.tasks_started))


def report_failures(result: PlaybookResult) -> None:
    for failure in result.failures[:20]:
        console.print(f"[red]FAILED[/red] {failure.host}: {failure.task}: {failure.message}")
