"""Charts drawn on the server as SVG: no script, no library, readable without colour.

    svg = bar_chart(["1 Nov", "2 Nov"], [3, 5], title="Sales per day", show=str)
    svg = line_chart(labels, [("p50", p50s, "p50"), ("p95", p95s, "p95")], title=..., show=...)

Each chart is an ``<svg role="img">`` named by its title, each bar or point
carries its value in a ``<title>`` (a tooltip, and what a screen reader
reads), and the page puts the same figures in a table beside it. ``show``
writes a value as people read it (an amount through ``format_money``, a
duration); the y axis has three lines at round values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

# Drawn about as wide as a third of a wide screen, so its text reads at its own size.
WIDTH, HEIGHT = 420, 210
LEFT, RIGHT, TOP, BOTTOM = 62, 6, 12, 24


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover (10 always fits)


def _frame(title: str, top: float, show: Callable[[float], str], labels: Sequence[str]) -> str:
    """Grid lines with their values, and every seventh day's label under the axis."""
    plot_h = HEIGHT - TOP - BOTTOM
    parts = []
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(show(top * fraction))}</text>"
        )
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for index, label in enumerate(labels):
        if (len(labels) - 1 - index) % 7 == 0:
            last = index == len(labels) - 1  # kept inside the frame, not cut at its edge
            x = LEFT + step * (index + (1 if last else 0.5))
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" '
                f'text-anchor="{"end" if last else "middle"}">{escape(label)}</text>'
            )
    return "".join(parts)


def _svg(title: str, body: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    show: Callable[[float], str],
    css: str = "bar",
) -> Markup:
    """One bar per label (a day), its value in its tooltip."""
    top = nice_ceiling(max(values, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(values), 1)
    bars = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = plot_h * value / top
        x = LEFT + step * index + step * 0.15
        bars.append(
            f'<rect class="{css}" x="{x:.1f}" y="{TOP + plot_h - height:.1f}" '
            f'width="{step * 0.7:.1f}" height="{max(height, 0):.1f}">'
            f"<title>{escape(label)}: {escape(show(value))}</title></rect>"
        )
    return _svg(title, _frame(title, top, show, labels) + "".join(bars))


def line_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str]],
    *,
    title: str,
    show: Callable[[float], str],
) -> Markup:
    """One line per series (name, values, CSS class); a day without a value breaks it."""
    present = [v for _, values, _ in series for v in values if v is not None]
    top = nice_ceiling(max(present, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    drawn = []
    for name, values, css in series:
        runs: list[list[str]] = [[]]
        for index, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            x = LEFT + step * (index + 0.5)
            y = TOP + plot_h * (1 - value / top)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            drawn.append(
                f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                f"<title>{escape(labels[index])}, {escape(name)}: {escape(show(value))}</title>"
                "</circle>"
            )
        for run in runs:
            if len(run) > 1:
                drawn.insert(0, f'<polyline class="{css}" points="{" ".join(run)}"/>')
    legend = "".join(
        f'<g class="legend"><line class="{css}" x1="{LEFT + 8 + 70 * i}" x2="{LEFT + 28 + 70 * i}" '
        f'y1="{TOP + 6}" y2="{TOP + 6}"/><text class="axis" x="{LEFT + 32 + 70 * i}" '
        f'y="{TOP + 10}">{escape(name)}</text></g>'
        for i, (name, _, css) in enumerate(series)
    )
    return _svg(title, _frame(title, top, show, labels) + "".join(drawn) + legend)
