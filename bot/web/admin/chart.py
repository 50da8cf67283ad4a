"""The decisions-per-hour chart as inline SVG: bars, both axes, ticks and their labels."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 16, 44


def nice_top(peak: int) -> int:
    """The y axis' top: the least of 4, 8, 12, 20, 40, 80, ... at or above ``peak`` (four
    ticks of whole numbers)."""
    scale = 1
    while True:
        for base in (4, 8, 12, 20):
            if base * scale >= peak:
                return base * scale
        scale *= 10


def hourly_svg(counts: Sequence[int], hour_labels: Sequence[str], *, x_title: str,
               y_title: str, aria: str) -> str:
    """An SVG bar chart of ``counts`` (one per hour, oldest first) labelled ``hour_labels``;
    every text is escaped."""
    top = nice_top(max(counts, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bar_w = plot_w / max(len(counts), 1)
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} '
             f'{HEIGHT}" role="img" aria-label="{escape(aria)}">']
    for i in range(5):  # y ticks and grid lines
        value = top * i // 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="grid"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{value}</text>')
    for i, n in enumerate(counts):
        h = plot_h * n / top
        x = LEFT + i * bar_w
        label = escape(hour_labels[i]) if i < len(hour_labels) else ""
        parts.append(f'<rect x="{x + 1:.1f}" y="{TOP + plot_h - h:.1f}" width="'
                     f'{max(bar_w - 2, 1):.1f}" height="{h:.1f}" data-count="{n}">'
                     f"<title>{label}: {n}</title></rect>")
        if i % 3 == 0 or i == len(counts) - 1:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{TOP + plot_h + 16}" '
                         f'text-anchor="middle">{label}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" class="axis"/>'
                 f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" '
                 f'y2="{TOP + plot_h}" class="axis"/>'
                 f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                 f'class="title">{escape(x_title)}</text>'
                 f'<text x="12" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" class="title" '
                 f'transform="rotate(-90 12 {TOP + plot_h / 2:.1f})">{escape(y_title)}</text>'
                 "</svg>")
    return "".join(parts)
