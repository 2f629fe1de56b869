"""Clause -> rules, controls, settings, tests and latest verify result.

The decision's rules come from the policy bundle through its own loader
(``qnprov.policy.bundle.load_policy``). The matrix is built by a pure function; the
edges (reading the bundle, scanning the test tree, reading verify's results file)
are separate so the rules for a gap are tested as data.

Clause status, strongest claim first:
  pass / fail / waived / error  the latest verify result of the clause's controls;
  not-verified                  there are tests, but no verify run covered the clause;
  gap                           nothing tests the clause: never shown as green.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qnprov.controls.catalogue import CLAUSE_IDS, Catalogue
from qnprov.controls.results import VerifyReport

_RANK = {"pass": 0, "waived": 1, "fail": 2, "error": 3}


@dataclass(frozen=True)
class RuleRef:
    id: str
    clause: str
    title: str
    action: str
    enabled: bool
    source: str


@dataclass
class ClauseTrace:
    clause: str
    text: str
    rules: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    status: str = "gap"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"clause": self.clause, "text": self.text, "status": self.status, "note": self.note,
                "rules": self.rules, "controls": self.controls, "settings": self.settings, "tests": self.tests}


def build_matrix(catalogue: Catalogue, clause_texts: dict[str, str], rules: list[RuleRef],
                 rule_tests: dict[str, list[str]], verify: VerifyReport | None) -> list[ClauseTrace]:
    """Trace every clause of the decision (pure)."""
    results = {c.id: c for c in verify.controls} if verify else {}
    matrix = []
    for clause in CLAUSE_IDS:
        trace = ClauseTrace(clause=clause, text=clause_texts.get(clause, ""))
        for rule in (r for r in rules if r.clause == clause):
            tests = sorted(rule_tests.get(rule.id, []))
            trace.rules.append({"id": rule.id, "title": rule.title, "action": rule.action,
                                "enabled": rule.enabled, "tests": tests})
            trace.settings.append(f"{rule.source}: rules[id={rule.id}] (action {rule.action}"
                                  f"{'' if rule.enabled else ', DISABLED'})")
            trace.tests += tests
        statuses = []
        for control in (c for c in catalogue.controls if clause in c.clauses):
            result = results.get(control.id)
            trace.controls.append({"id": control.id, "title": control.title,
                                   "status": result.status if result else "not-verified",
                                   "detail": result.detail if result else ""})
            trace.settings += [e.label for e in control.enforcement]
            trace.tests += [f"qnprov/controls/suite/{t}" for t in control.tests]
            if result:
                statuses.append(result.status)
        trace.settings = sorted(set(trace.settings))
        trace.tests = sorted(set(trace.tests))
        if not trace.tests:
            trace.status, trace.note = "gap", "no test checks this clause"
        elif statuses:
            trace.status = max(statuses, key=lambda s: _RANK[s])
            unverified = len(trace.controls) - len(statuses)
            policy_only = [r["id"] for r in trace.rules if r["tests"]]
            trace.note = (f"{len(statuses)} control(s) verified" + (f", {unverified} not" if unverified else "")
                          + (f"; policy rules tested offline: {', '.join(policy_only)}" if policy_only else ""))
        else:
            trace.status = "not-verified"
            trace.note = "tests exist, but no verify result covers this clause" + (
                "" if verify else " (no verify results file)")
        untested = [r["id"] for r in trace.rules if not r["tests"]]
        if untested:
            trace.note += f"; rules without a test: {', '.join(untested)}"
        disabled = [r["id"] for r in trace.rules if not r["enabled"]]
        if disabled:
            trace.note += f"; disabled rules: {', '.join(disabled)}"
        matrix.append(trace)
    return matrix


def load_rules() -> tuple[dict[str, str], list[RuleRef], str]:
    """Clause texts and rules from the policy bundle (through qnprov.policy's loader)."""
    from qnprov.policy.bundle import load_policy

    policy = load_policy()
    source = f"qnprov/policy/data/{policy.source.name}"
    texts = {clause.id: clause.en for clause in policy.bundle.clauses}
    rules = [RuleRef(r.id, r.clause, " ".join(r.en.split()), str(r.action), r.enabled, source)
             for r in policy.bundle.rules]
    return texts, rules, f"{source} (version {policy.version})"


def find_rule_tests(rule_ids: list[str], tests_dir: Path) -> dict[str, list[str]]:
    """Test functions (with their decorators) that mention a rule id as a string literal."""
    found: dict[str, list[str]] = {rule: [] for rule in rule_ids}
    if not tests_dir.is_dir():
        return found
    for path in sorted(tests_dir.rglob("test_*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        relative = path.relative_to(tests_dir.parent).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not node.name.startswith("test_"):
                continue
            literals = {c.value for sub in [*node.decorator_list, node] for c in ast.walk(sub)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            for rule in rule_ids:
                if any(rule == literal or f"'{rule}'" in literal or f'"{rule}"' in literal for literal in literals):
                    found[rule].append(f"{relative}::{node.name}")
    return found


def render_text(matrix: list[ClauseTrace]) -> str:
    lines = []
    for trace in matrix:
        lines.append(f"Clause {trace.clause}: {trace.status.upper()} — {trace.note}")
        lines += [f"  rule    {r['id']} ({r['action']}) tests: {len(r['tests'])}" for r in trace.rules]
        lines += [f"  control {c['id']} {c['status']}: {c['title']}" for c in trace.controls]
        lines.append(f"  {len(trace.tests)} test(s), {len(trace.settings)} setting(s)")
    return "\n".join(lines)


def render_html(matrix: list[ClauseTrace], *, bundle: str, verify_at: str | None) -> str:
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_HTML).render(matrix=matrix, bundle=bundle, verify_at=verify_at)


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qnprov traceability</title>
<style>
body{font-family:"DejaVu Sans",Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left}th{background:#f3f3f3}
.s{font-weight:bold;text-transform:uppercase}.pass{color:#2e7d32}.fail,.gap{color:#c62828}
.error{color:#6a1b9a}.waived,.not-verified{color:#a07800}code{font-size:.85em}
</style></head><body>
<h1>Decision clause → control → test traceability</h1>
<p>Rules from {{ bundle }}. Latest verify: {{ verify_at or "none recorded" }}.
A clause that nothing tests is a <span class="s gap">gap</span>; one with tests but no verify result is
<span class="s not-verified">not-verified</span>.</p>
<table><tr><th>clause</th><th>status</th><th>rules</th><th>controls</th><th>tests</th></tr>
{% for t in matrix %}<tr><td><b>{{ t.clause }}</b><br><small>{{ t.text }}</small></td>
<td class="s {{ t.status }}">{{ t.status }}<br><small>{{ t.note }}</small></td>
<td>{% for r in t.rules %}{{ r.id }} ({{ r.action }}){% if not r.enabled %} DISABLED{% endif %}<br>{% endfor %}</td>
<td>{% for c in t.controls %}<span class="{{ c.status }}">{{ c.id }}</span> {{ c.title }}<br>{% endfor %}</td>
<td>{% for x in t.tests %}<code>{{ x }}</code><br>{% endfor %}</td></tr>{% endfor %}
</table>
<h2>Files and settings</h2>
{% for t in matrix %}<h3>{{ t.clause }}</h3><ul>{% for s in t.settings %}<li><code>{{ s }}</code></li>
{% else %}<li>none</li>{% endfor %}</ul>{% endfor %}
</body></html>
"""
