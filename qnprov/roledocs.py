"""Role READMEs generated from each role's ``meta/argument_specs.yml``.

The argument spec is the single source: ``qnprov-roledocs`` (or ``python -m
qnprov.roledocs``) rewrites ``roles/<role>/README.md``, and a test fails when a
README no longer matches its spec.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from qnprov import paths

HEADER = "<!-- Generated from meta/argument_specs.yml by `python -m qnprov.roledocs`; do not edit. -->\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _description(option: dict[str, Any]) -> str:
    desc = option.get("description", "")
    if isinstance(desc, list):
        desc = " ".join(str(d) for d in desc)
    return " ".join(str(desc).split()).replace("|", "\\|")


def render_role_readme(role_dir: Path) -> str:
    spec = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text()) or {}
    main = (spec.get("argument_specs") or {}).get("main") or {}
    lines = [HEADER, f"# Role `{role_dir.name}`\n"]
    summary = main.get("short_description") or ""
    if summary:
        lines.append(f"{summary}\n")
    description = main.get("description")
    if description:
        text = " ".join(description) if isinstance(description, list) else str(description)
        lines.append(f"{' '.join(text.split())}\n")
    lines.append("## Variables\n")
    lines.append("| variable | type | default | choices | description |")
    lines.append("|---|---|---|---|---|")
    for name, option in sorted((main.get("options") or {}).items()):
        option = option or {}
        kind = option.get("type", "str")
        if kind == "list" and option.get("elements"):
            kind = f"list of {option['elements']}"
        required = " (required)" if option.get("required") else ""
        lines.append(f"| `{name}`{required} | {kind} | {_cell(option.get('default'))} | "
                     f"{_cell(option.get('choices'))} | {_description(option)} |")
    return "\n".join(lines) + "\n"


def roles_with_specs(roles_dir: Path = paths.ROLES_DIR) -> list[Path]:
    return sorted(p for p in roles_dir.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def main() -> int:
    for role_dir in roles_with_specs():
        (role_dir / "README.md").write_text(render_role_readme(role_dir))
        print(f"wrote {role_dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
