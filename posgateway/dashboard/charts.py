"""Server-rendered SVG charts: no JavaScript library, no CDN, readable without colour."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 960
HEIGHT = 180
LEFT = 34
RIGHT = 6
TOP = 10
BOTTOM = 24


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 … not below ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def hourly_bars(hours: Sequence[tuple[int, int]], *, current_hour: int | None = None) -> SafeString:
    """Payments per local hour as stacked bars: succeeded (solid) under not succeeded (hatched).

    ``hours`` holds 24 pairs (succeeded, not succeeded). Every bar has a ``<title>`` with its
    numbers, and the legend names both series in words.
    """
    top = _nice_ceiling(max((ok + other for ok, other in hours), default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / 24
    bar_w = slot * 0.7
    scale = plot_h / top
    total_ok = sum(ok for ok, _ in hours)
    total_other = sum(other for _, other in hours)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'preserveAspectRatio="xMidYMid meet" '
        f'aria-label="Payments per hour today: {total_ok} succeeded, {total_other} not">',
        '<defs><pattern id="glance-hatch" patternUnits="userSpaceOnUse" width="6" height="6" '
        'patternTransform="rotate(45)"><rect width="6" height="6" class="hatch-bg"/>'
        '<line x1="0" y1="0" x2="0" y2="6" class="hatch-line"/></pattern></defs>',
    ]
    for fraction in (0, 0.5, 1):
        value = top * fraction
        if fraction == 0.5 and top % 2:
            continue  # an odd top has no whole middle line
        y = TOP + plot_h - value * scale
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{int(value)}</text>"
        )
    for hour, (ok, other) in enumerate(hours):
        x = LEFT + hour * slot + (slot - bar_w) / 2
        label = (
            f"{hour:02d}:00 to {hour:02d}:59: {ok} succeeded, {other} not succeeded"
            if ok or other
            else f"{hour:02d}:00 to {hour:02d}:59: no payments"
        )
        parts.append(f'<g class="hour" data-hour="{hour}"><title>{escape(label)}</title>')
        if hour == current_hour:
            parts.append(
                f'<rect class="now" x="{LEFT + hour * slot:.1f}" y="{TOP}" '
                f'width="{slot:.1f}" height="{plot_h}"/>'
            )
        base = TOP + plot_h
        if ok:
            h = ok * scale
            parts.append(
                f'<rect class="bar-ok" x="{x:.1f}" y="{base - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
            base -= h
        if other:
            h = other * scale
            parts.append(
                f'<rect class="bar-other" x="{x:.1f}" y="{base - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        parts.append("</g>")
        if hour % 3 == 0:
            parts.append(
                f'<text class="axis" x="{LEFT + hour * slot + slot / 2:.1f}" '
                f'y="{HEIGHT - 6}" text-anchor="middle">{hour:02d}</text>'
            )
    parts.append(
        f'<line class="baseline" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
        f'y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (numbers we formatted; the one text escaped)
