"""Geometry of the report's inline SVG bar charts (pure; the template draws them).

Every bar and every segment carries its figure, so a test in a browser can count the
bars and read their values back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ACTION_COLOURS = {"reject": "#c62828", "hold": "#ef6c00", "tag": "#1565c0", "log": "#78909c"}
CHART_HEIGHT = 160.0
BAR_GAP = 4.0


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1.0
    while True:
        for factor in (1.0, 2.0, 5.0):
            if value <= step * factor:
                return step * factor
        step *= 10.0


def week_chart(weeks: Sequence[str], cells: Mapping[str, Mapping[str, int]], actions: Sequence[str],
               width: float = 640.0) -> dict[str, Any]:
    """One stacked vertical bar per week, one segment per action with events."""
    top = nice_max(max((sum(cells[w].values()) for w in weeks), default=0))
    slot = width / max(len(weeks), 1)
    bars = []
    for index, week in enumerate(weeks):
        y = CHART_HEIGHT
        segments = []
        for action in actions:
            count = cells[week].get(action, 0)
            if count:
                height = CHART_HEIGHT * count / top
                y -= height
                segments.append({"action": action, "count": count, "y": f"{y:.2f}", "h": f"{height:.2f}",
                                 "colour": ACTION_COLOURS[action]})
        bars.append({"week": week, "x": f"{index * slot + BAR_GAP / 2:.2f}", "w": f"{max(slot - BAR_GAP, 1):.2f}",
                     "total": sum(cells[week].values()), "segments": segments, "label_x": f"{index * slot:.2f}"})
    return {"bars": bars, "top": top, "width": width, "height": CHART_HEIGHT,
            "label_every": max(1, len(weeks) // 8)}


def ranking_chart(rows: Sequence[Mapping[str, Any]], key: str, width: float = 420.0) -> dict[str, Any]:
    """Horizontal bars, largest first, for the rows whose ``key`` has a value."""
    ranked = [row for row in rows if row.get(key) is not None]
    ranked.sort(key=lambda row: (-float(row[key]), str(row["agency"])))
    top = max((float(row[key]) for row in ranked), default=0.0) or 1.0
    bars = [{"agency": row["agency"], "value": row[key], "y": index * 22, "w": f"{width * float(row[key]) / top:.2f}"}
            for index, row in enumerate(ranked)]
    return {"bars": bars, "width": width, "height": max(len(bars), 1) * 22}
