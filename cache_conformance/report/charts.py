"""Small inline SVG line charts (no chart library: the page must work offline, from file://)."""

from __future__ import annotations

import math

from markupsafe import Markup, escape

COLOURS = ["#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#a16207"]


def line_chart(lines: dict[str, list[float | None]], *, labels: list[str] | None = None, unit: str = "",
               width: int = 260, height: int = 90, title: str = "") -> Markup:
    """One polyline per named series over a shared x axis; None leaves a gap. Legend and y range in text."""
    values = [v for series in lines.values() for v in series if v is not None and math.isfinite(v)]
    if not values:
        return Markup("")
    low, high = min(values), max(values)
    span = (high - low) or abs(high) or 1.0  # a flat series is drawn mid-height
    count = max(len(series) for series in lines.values())
    left, right, top, bottom = 4, width - 4, 6, height - 18

    def x(i: int) -> float:
        return left + (right - left) * (i / (count - 1) if count > 1 else 0.5)

    def y(v: float) -> float:
        return bottom - (bottom - top) * ((v - low) / span if high != low else 0.5)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f"<title>{escape(title)}</title>" if title else "",
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>']
    for n, (name, series) in enumerate(lines.items()):
        colour = COLOURS[n % len(COLOURS)]
        dash = ' stroke-dasharray="4 2"' if n % 2 else ""  # told apart in black and white print too
        for segment in _segments(series):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in segment)
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>')
            for i, v in segment:
                label = f"{name}: {format_number(v, unit)}" + (f" ({labels[i]})" if labels else "")
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="1.8" fill="{colour}">'
                             f"<title>{escape(label)}</title></circle>")
        parts.append(f'<text x="{left + 110 * n}" y="{height - 4}" fill="{colour}">{"- -" if dash else "—"} '
                     f"{escape(name)}</text>")
    parts.append(f'<text x="{right}" y="{top + 4}" text-anchor="end">{escape(format_number(high, unit))}</text>')
    if high != low:
        parts.append(f'<text x="{right}" y="{bottom - 2}" text-anchor="end">{escape(format_number(low, unit))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _segments(series: list[float | None]) -> list[list[tuple[int, float]]]:
    segments, current = [], []
    for i, v in enumerate(series):
        if v is None or not math.isfinite(v):
            if current:
                segments.append(current)
            current = []
        else:
            current.append((i, v))
    return segments + ([current] if current else [])


def format_number(value: float, unit: str = "") -> str:
    if unit == "bytes":
        for size, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= size:
                return f"{value / size:.3g} {name}"
        return f"{value:.0f} B"
    return f"{value:.3g}{' ' + unit if unit else ''}"
