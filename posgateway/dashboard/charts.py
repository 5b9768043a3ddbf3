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


def _hour_text(hour: int, ok: int, busy: int, other: int) -> str:
    if not (ok or busy or other):
        return f"{hour:02d}:00 to {hour:02d}:59: no payments"
    parts = [f"{ok} succeeded"]
    if busy:
        parts.append(f"{busy} in flight")
    parts.append(f"{other} not succeeded")
    return f"{hour:02d}:00 to {hour:02d}:59: " + ", ".join(parts)


def hourly_bars(
    hours: Sequence[tuple[int, int, int]], *, current_hour: int | None = None
) -> SafeString:
    """Payments per local hour as stacked bars: succeeded (solid), in flight (outlined) and
    not succeeded (hatched), from the bottom up.

    ``hours`` holds 24 triples (succeeded, in flight, not succeeded). Every bar has a
    ``<title>`` with its numbers, and the legend names the series in words. Wide screens only:
    a phone gets :func:`hourly_list`.
    """
    top = _nice_ceiling(max((sum(counts) for counts in hours), default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / 24
    bar_w = slot * 0.7
    scale = plot_h / top
    total_ok = sum(ok for ok, _, _ in hours)
    total_busy = sum(busy for _, busy, _ in hours)
    total_other = sum(other for _, _, other in hours)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'preserveAspectRatio="xMidYMid meet" '
        f'aria-label="Payments per hour today: {total_ok} succeeded, {total_busy} in flight, '
        f'{total_other} not succeeded">',
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
    for hour, (ok, busy, other) in enumerate(hours):
        x = LEFT + hour * slot + (slot - bar_w) / 2
        label = _hour_text(hour, ok, busy, other)
        parts.append(f'<g class="hour" data-hour="{hour}"><title>{escape(label)}</title>')
        if hour == current_hour:
            parts.append(
                f'<rect class="now" x="{LEFT + hour * slot:.1f}" y="{TOP}" '
                f'width="{slot:.1f}" height="{plot_h}"/>'
            )
        base = TOP + plot_h
        for count, css in ((ok, "bar-ok"), (busy, "bar-busy"), (other, "bar-other")):
            if count:
                h = count * scale
                parts.append(
                    f'<rect class="{css}" x="{x:.1f}" y="{base - h:.1f}" '
                    f'width="{bar_w:.1f}" height="{h:.1f}"/>'
                )
                base -= h
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


def hourly_list(
    hours: Sequence[tuple[int, int, int]], *, current_hour: int | None = None
) -> SafeString:
    """The same numbers for a phone: one readable line per hour that had payments (from the
    first such hour to the last, and the current hour), each with a bar as wide as its share
    of the busiest hour and its numbers in words."""
    busy_hours = [h for h, counts in enumerate(hours) if sum(counts)]
    if current_hour is not None:
        busy_hours.append(current_hour)
    if not busy_hours or not any(sum(counts) for counts in hours):
        return mark_safe('<p class="empty hour-list">No payments yet today.</p>')
    top = max(sum(counts) for counts in hours)
    # The hatch of "not succeeded", once for every bar (a zero-size SVG, not display:none, or
    # browsers would not paint it). Each bar is an SVG of its own: widths as attributes, no
    # style attribute (the Content-Security-Policy allows no inline style).
    parts = [
        '<svg class="hour-defs" width="0" height="0" aria-hidden="true"><defs>'
        '<pattern id="hour-hatch" patternUnits="userSpaceOnUse" width="5" height="5" '
        'patternTransform="rotate(45)"><rect width="5" height="5" class="hatch-bg"/>'
        '<line x1="0" y1="0" x2="0" y2="5" class="hatch-line"/></pattern></defs></svg>',
        '<ol class="hour-list" aria-label="Payments per hour today">',
    ]
    for hour in range(min(busy_hours), max(busy_hours) + 1):
        ok, busy, other = hours[hour]
        now = ' class="now" aria-current="time"' if hour == current_hour else ""
        x = 0.0
        rects = []
        for count, css in ((ok, "seg-ok"), (busy, "seg-busy"), (other, "seg-other")):
            if count:
                width = 100 * count / top
                rects.append(
                    f'<rect class="{css}" x="{x:.1f}" y="0" width="{width:.1f}" height="10"/>'
                )
                x += width
        segments = (
            '<svg viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
            + "".join(rects)
            + "</svg>"
        )
        words = [f"{ok} ok"] if ok else []
        if busy:
            words.append(f"{busy} in flight")
        if other:
            words.append(f"{other} not")
        parts.append(
            f'<li data-hour="{hour}"{now}><span class="hour-label">{hour:02d}:00</span>'
            f'<span class="hour-bar" title="{escape(_hour_text(hour, ok, busy, other))}">'
            f"{segments}</span>"
            f'<span class="hour-words">{escape(" · ".join(words) or "none")}</span></li>'
        )
    parts.append("</ol>")
    return mark_safe("".join(parts))  # noqa: S308 (numbers we formatted; the texts escaped)
