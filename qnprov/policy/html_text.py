"""Visible text of HTML, linear on hostile markup."""

from __future__ import annotations

import html
import re

# Tag patterns never cross a '<', so a flood of unclosed tags stays linear.
_BLOCK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|/table|p|div|tr|li|h[1-6])\b[^<>]*>", re.IGNORECASE)
_CELL_TAGS = re.compile(r"<\s*/?\s*t[dh]\b[^<>]*>", re.IGNORECASE)
_DROP_START = re.compile(r"<(script|style)\b", re.IGNORECASE)
_DROP_END = re.compile(r"</(?:script|style)\s*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^<>]*>")


def _drop_scripts(markup: str) -> str:
    """Remove <script>/<style> blocks in one pass (an unclosed block runs to the end)."""
    out: list[str] = []
    position = 0
    while True:
        start = _DROP_START.search(markup, position)
        if start is None:
            out.append(markup[position:])
            return "".join(out)
        out.append(markup[position:start.start()])
        end = _DROP_END.search(markup, start.end())
        if end is None:
            return "".join(out)
        position = end.end()


# Text right after a tag styled "text-transform: uppercase" is displayed in capitals.
_UPPERCASE_STYLED = re.compile(r"(<[a-zA-Z][^<>]*text-transform\s*:\s*uppercase[^<>]*>)([^<]*)", re.IGNORECASE)


def html_to_text(markup: str) -> str:
    """Visible text of HTML with line and cell breaks kept (stamps are matched per cell)."""
    markup = _drop_scripts(markup)
    if "text-transform" in markup:
        markup = _UPPERCASE_STYLED.sub(lambda m: m.group(1) + html.unescape(m.group(2)).upper(), markup)
    markup = _BLOCK_TAGS.sub("\n", markup)
    markup = _CELL_TAGS.sub("\t", markup)
    return html.unescape(_ANY_TAG.sub("", markup))
