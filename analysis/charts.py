"""Small, dependency-free SVG charts for the dashboard.

People read a score distribution faster than a table, so the dashboard draws one. These are
pure functions from counts to an SVG string: every label is escaped, sizes are fixed, and
there is no script, so the output is safe to inline in HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BAR_COLOURS = {"low": "#d9534f", "mid": "#f0ad4e", "high": "#5cb85c", "plain": "#4f46e5"}


def column_chart(
    points: Sequence[tuple[str, int]],
    *,
    colours: Sequence[str] | None = None,
    title: str,
    width: int = 440,
    height: int = 160,
) -> str:
    """Vertical bars, one per point (e.g. NPS 0–10), with the count above each bar."""
    n = max(len(points), 1)
    top = max((count for _, count in points), default=0) or 1
    gap = 4
    bar = (width - gap * (n + 1)) / n
    plot = height - 36
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, count) in enumerate(points):
        h = round(plot * count / top, 1)
        x = round(gap + i * (bar + gap), 1)
        y = round(18 + plot - h, 1)
        colour = colours[i] if colours else BAR_COLOURS["plain"]
        parts.append(
            f'<rect x="{x}" y="{y}" width="{round(bar, 1)}" height="{h}" fill="{colour}">'
            f"<title>{escape(label)}: {count}</title></rect>"
        )
        cx = round(x + bar / 2, 1)
        parts.append(
            f'<text x="{cx}" y="{round(y - 4, 1)}" font-size="11" text-anchor="middle">{count}</text>'
        )
        parts.append(
            f'<text x="{cx}" y="{height - 4}" font-size="11" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(rows: Sequence[tuple[str, int]], *, title: str, width: int = 440) -> str:
    """Horizontal bars with labels (top choices), longest first as given."""
    row_height = 22
    height = max(len(rows), 1) * row_height + 4
    label_width = 200
    top = max((count for _, count in rows), default=0) or 1
    room = width - label_width - 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, count) in enumerate(rows):
        y = 2 + i * row_height
        w = round(room * count / top, 1)
        short = label if len(label) <= 32 else label[:31] + "…"
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(short)}</text>')
        parts.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{w}" height="{row_height - 6}" '
            f'fill="{BAR_COLOURS["plain"]}"><title>{escape(label)}: {count}</title></rect>'
        )
        parts.append(f'<text x="{label_width + w + 4}" y="{y + 15}" font-size="12">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nps_colours(points: Sequence[int]) -> list[str]:
    """Detractors red, passives amber, promoters green — the convention readers expect."""
    return [
        BAR_COLOURS["low"] if p <= 6 else BAR_COLOURS["mid"] if p <= 8 else BAR_COLOURS["high"]
        for p in points
    ]
