"""A typed wrapper around ansible-runner.

Results arrive as events through callbacks (no polling): task starts drive the
progress display, ``runner_on_*`` events count per host, and the final
``playbook_on_stats`` event gives the authoritative per-host totals.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from qnprov import paths
from qnprov.errors import ExternalError


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    def as_json(self) -> dict[str, int]:
        return {"ok": self.ok, "changed": self.changed, "failed": self.failed, "unreachable": self.unreachable}


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str


@dataclass
class PlaybookResult:
    rc: int
    status: str
    hosts: dict[str, HostStats] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    changed_tasks: list[tuple[str, str]] = field(default_factory=list)
    tasks_started: int = 0
    seconds: float = 0.0
    #: (host, task, seconds) of every task result that ran (ok, changed or failed; loops
    #: count once, all items together); skipped tasks are left out.
    task_seconds: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.rc != 0 or any(h.failed or h.unreachable for h in self.hosts.values())

    def as_json(self) -> dict[str, Any]:
        # changed_tasks names what changed, so a no-change run that changed something says what.
        # failures carry the same messages the text output prints (no_log tasks' are censored by Ansible).
        return {"hosts": {name: stats.as_json() for name, stats in sorted(self.hosts.items())}, "rc": self.rc,
                "changed_tasks": [{"host": host, "task": task} for host, task in self.changed_tasks],
                "failures": [{"host": f.host, "task": f.task, "message": f.message} for f in self.failures]}


@dataclass(frozen=True)
class ProgressEvent:
    """What the progress display needs from one runner event."""

    kind: str  # task | ok | changed | failed | skipped | unreachable | stats
    task: str = ""
    host: str = ""


EventCallback = Callable[[ProgressEvent], None]

_RESULT_KINDS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def _failure_message(res: Mapping[str, Any]) -> str:
    if res.get("_ansible_no_log"):
        return "(output hidden by no_log)"
    # A loop says only "One or more items failed": name each failed item and its own message.
    items = [item for item in res.get("results") or [] if isinstance(item, Mapping) and item.get("failed")]
    if items:
        parts = [f"{item.get('_ansible_item_label', item.get('item', '?'))}: {_failure_message(item)}"
                 if not item.get("_ansible_no_log") else "(output hidden by no_log)" for item in items[:3]]
        more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
        return ("; ".join(parts) + more)[:600]
    for key in ("msg", "stderr", "module_stderr", "reason"):
        value = res.get(key)
        if value:
            return str(value).strip().splitlines()[-1][:300] if isinstance(value, str) else str(value)[:300]
    return "failed"


#: How long cached facts stand in for gathering (seconds). A run within this time of the
#: last one reads the host's facts from the state instead of gathering them again.
FACT_CACHE_TIMEOUT = 3600


def fact_cache_dir(state: Path | None = None) -> Path:
    """Ansible's jsonfile fact cache: one file per inventory host name, in the qnprov state."""
    return (state or paths.state_dir()) / "facts"


def fact_cache_host(file_name: str) -> str:
    """The inventory host name a jsonfile cache file holds facts for. ansible-core 2.19
    prefixes its schema version (``s1_mail1``); older versions wrote the bare name."""
    match = re.fullmatch(r"s\d+_(.+)", file_name)
    return match[1] if match else file_name


def ansible_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment every qnprov Ansible run uses, whatever the entry point.

    Facts are gathered only when the cache in the state directory has none for the
    host (``gathering = smart`` with the jsonfile cache). This is set here, for qnprov's
    own runs, not in ansible.cfg: a plain ``ansible-playbook`` keeps the memory cache.
    """
    state = Path(extra["QNPROV_STATE_DIR"]) if extra and extra.get("QNPROV_STATE_DIR") else paths.state_dir()
    env = {
        "ANSIBLE_CONFIG": str(paths.ANSIBLE_CFG),
        "ANSIBLE_ROLES_PATH": str(paths.ROLES_DIR),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        # ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False unless the environment names
        # it, which makes Ansible pass -o StrictHostKeyChecking=no to ssh ahead of anything
        # an inventory says: every qnprov run would accept any host key. Keep ansible.cfg's.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(fact_cache_dir(state)),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(FACT_CACHE_TIMEOUT),
    }
    # ansible-runner starts ansible-playbook / ansible by name: find the ones installed
    # beside this interpreter (qnprov's own virtualenv) even when it is not activated.
    tools = str(Path(sys.executable).parent)
    if tools not in os.environ.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join([tools, os.environ.get("PATH", os.defpath)])
    if "QNPROV_STATE_DIR" not in os.environ:
        env["QNPROV_STATE_DIR"] = str(paths.state_dir())
    if extra:
        env.update(extra)
    return env


def runner_fact_cache(env: Mapping[str, str]) -> dict[str, str]:
    """ansible-runner's fact-cache settings for ``env``. Left alone, the runner points
    ANSIBLE_CACHE_PLUGIN_CONNECTION at its private, per-run artifacts directory (removed
    after the run); an absolute ``fact_cache`` replaces that with the state's cache."""
    return {"fact_cache_type": "jsonfile", "fact_cache": env["ANSIBLE_CACHE_PLUGIN_CONNECTION"]}


def run_playbook(
    playbook: Path,
    *,
    inventory: Path,
    check: bool = False,
    diff: bool = False,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    extravars_files: Sequence[Path] = (),
    vault_password_file: Path | None = None,
    envvars: Mapping[str, str] | None = None,
    on_event: EventCallback | None = None,
    verbosity: int = 0,
) -> PlaybookResult:
    """Run one playbook to completion and return per-host results.

    Secrets never pass through ansible-runner's ``extravars`` (it writes them to
    a file in its private data dir); they come from inventory lookups, vault
    files or ``-e @file`` arguments naming files that are already 0600.
    """
    if not playbook.is_file():
        raise ExternalError(f"playbook {playbook} not found")
    result = PlaybookResult(rc=-1, status="unstarted")
    current_task = {"name": ""}
    lock = threading.Lock()

    def handle(event: dict[str, Any]) -> bool:
        name = event.get("event", "")
        data = event.get("event_data", {}) or {}
        with lock:
            if name == "playbook_on_task_start":
                result.tasks_started += 1
                current_task["name"] = str(data.get("task", ""))
                if on_event:
                    on_event(ProgressEvent("task", task=current_task["name"]))
            elif name in _RESULT_KINDS:
                host = str(data.get("host", ""))
                kind = _RESULT_KINDS[name]
                res = data.get("res", {}) or {}
                if kind == "ok" and res.get("changed"):
                    kind = "changed"
                    result.changed_tasks.append((host, str(data.get("task", ""))))
                if kind in {"ok", "changed", "failed"} and isinstance(data.get("duration"), (int, float)):
                    result.task_seconds.append((host, str(data.get("task", "")), float(data["duration"])))
                if kind in {"failed", "unreachable"} and not data.get("ignore_errors"):
                    result.failures.append(TaskFailure(host, str(data.get("task", "")), _failure_message(res)))
                if on_event:
                    on_event(ProgressEvent(kind, task=str(data.get("task", "")), host=host))
            elif name == "playbook_on_stats":
                for attr, key in (("ok", "ok"), ("changed", "changed"), ("failed", "failures"),
                                  ("unreachable", "dark"), ("skipped", "skipped")):
                    for host, count in (data.get(key) or {}).items():
                        setattr(result.hosts.setdefault(host, HostStats()), attr, int(count))
                for host in data.get("processed", {}) or {}:
                    result.hosts.setdefault(host, HostStats())
                if on_event:
                    on_event(ProgressEvent("stats"))
        return False  # do not keep job events on disk: they may hold task output

    cmdline: list[str] = []
    for path in extravars_files:
        cmdline += ["-e", f"@{path}"]
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    if vault_password_file:
        cmdline += ["--vault-password-file", str(vault_password_file)]

    # ansible-playbook lives beside this interpreter (a venv is not always on PATH).
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    env = ansible_env(envvars)
    cache = Path(env["ANSIBLE_CACHE_PLUGIN_CONNECTION"])
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache, 0o700)  # facts describe the hosts; they stay with the operator
    private = Path(tempfile.mkdtemp(prefix="qnprov-runner-"))
    os.chmod(private, 0o700)
    started = time.monotonic()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(paths.PROJECT_ROOT),
            playbook=str(playbook),
            inventory=str(inventory),
            limit=limit,
            tags=tags,
            skip_tags=skip_tags,
            cmdline=" ".join(_quote(c) for c in cmdline) or None,
            envvars=env,
            **runner_fact_cache(env),
            event_handler=handle,
            quiet=True,
            verbosity=verbosity or None,
            suppress_env_files=True,
            timeout=None,
        )
        result.rc = int(runner.rc if runner.rc is not None else 1)
        result.status = str(runner.status)
        if result.rc != 0 and not result.hosts and not result.failures:
            tail = (runner.stdout.read() if runner.stdout else "").strip().splitlines()[-6:]
            result.failures.append(TaskFailure("-", "ansible-playbook", " | ".join(tail) or result.status))
    finally:
        shutil.rmtree(private, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def result_as_dict(result: PlaybookResult) -> dict[str, Any]:
    return asdict(result)
