"""The job page's drawings, inline SVG drawn on the server, no JavaScript: the throughput
chart and the bar of rows by state (the job page's and the jobs list's).

Input is ``job.samples``: [[unix seconds, rows done], …] appended as chunks commit. The chart
shows the rate between consecutive samples (rows per second) over the job's run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 600
HEIGHT = 160
PAD_LEFT = 48
PAD_BOTTOM = 22
PAD_TOP = 10
PAD_RIGHT = 8
MAX_POINTS = 120


# An interval this much longer than both of its neighbours, and at least GAP_SECONDS, is a time
# with nothing done (a pause, an auto-pause's wait, a stopped worker), not a slow stretch.
GAP_FACTOR = 5
GAP_SECONDS = 10.0


def rates(samples: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """(seconds since the first sample, rows/s over the interval ending there). A gap (a pause)
    is drawn at zero from its start to its end: averaged over the interval after it, the rate
    would slope down across the pause and read low on its far side."""
    clean = sorted((float(t), float(d)) for t, d in (s[:2] for s in samples if len(s) >= 2))
    if len(clean) < 2:
        return []
    t0 = clean[0][0]
    spans = [tb - ta for (ta, _), (tb, _) in zip(clean, clean[1:], strict=False)]
    points: list[tuple[float, float]] = [(0.0, 0.0)]
    for i, ((ta, da), (tb, db)) in enumerate(zip(clean, clean[1:], strict=False)):
        span = spans[i]
        if span <= 0:
            continue
        neighbours = [spans[j] for j in (i - 1, i + 1) if 0 <= j < len(spans)]
        if span >= GAP_SECONDS and neighbours and all(span > GAP_FACTOR * n for n in neighbours):
            points.append((ta - t0, 0.0))
            points.append((tb - t0, 0.0))
            continue
        points.append((tb - t0, max(0.0, (db - da) / span)))
    return _thin(points) if len(points) > 1 else []


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most MAX_POINTS points: average neighbours so a long job's chart stays small."""
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    out = []
    for i in range(MAX_POINTS):
        group = points[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]
        out.append((group[-1][0], sum(r for _, r in group) / len(group)))
    return out


def _nice(value: float) -> float:
    """A round axis maximum at or above value (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def duration_text(seconds: float) -> str:
    """How long, as every part of the pages writes it (the counters, the chart's summary): whole
    seconds cut, not rounded, so a clock never reads ahead; "under 1 s" rather than a "0 s"
    beside a rate of rows per second."""
    if 0 < seconds < 1:
        return "under 1 s"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _duration(seconds: float) -> str:
    # The time axis's end: whole steps of it, as the axis reads.
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def rate_text(value: float | None) -> str:
    """Rows per second, as every part of the pages writes them (the counters, the chart): a
    slow job's 5 rows in 9 minutes is "under 0.01", not "0" or "0.0" as if none had run."""
    if not value:
        return "0"
    if value >= 10:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if value < 0.01:
        return "under 0.01"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def throughput_svg(
    samples: Sequence[Sequence[float]],
    *,
    title: str = "Throughput",
    average: tuple[float, float] | None = None,
) -> SafeString:
    """An accessible inline SVG, or a short note when there is not enough data yet.

    `average`: (rows per second, over seconds) for the summary, when the caller knows the job's
    own (a finished job's, as its page states it); else the samples' first to last.
    Remembered for the samples it was drawn from: every open job page asks for the chart each
    second, and the samples change at most once a second (drawing 240 of them takes ~0.5 ms).
    """
    return _drawn(tuple(tuple(sample) for sample in samples or ()), title, average)


@lru_cache(maxsize=64)
def _drawn(
    samples: tuple[tuple[float, ...], ...], title: str, average: tuple[float, float] | None
) -> SafeString:
    return _draw(samples, title=title, average=average)


def _draw(
    samples: Sequence[Sequence[float]],
    *,
    title: str,
    average: tuple[float, float] | None = None,
) -> SafeString:
    points = rates(samples or [])
    if not points:
        return format_html(
            '<p class="chart-empty muted">{}</p>', "The chart appears once rows are done."
        )
    span = max(points[-1][0], 1.0)
    top = _nice(max(r for _, r in points))
    peak = max(r for _, r in points)
    if average is None:
        rows = float(samples[-1][1]) - float(samples[0][1]) if len(samples) > 1 else 0.0
        average = (rows / span, span)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(t: float, r: float) -> str:
        x = PAD_LEFT + plot_w * (t / span)
        y = PAD_TOP + plot_h * (1 - r / top)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(t, r) for t, r in points)
    base_y = PAD_TOP + plot_h
    end_x = PAD_LEFT + plot_w * (points[-1][0] / span)
    area = f"{PAD_LEFT:.1f},{base_y:.1f} {line} {end_x:.1f},{base_y:.1f}"
    summary = (
        f"{title}: peak {rate_text(peak)} rows per second, average {rate_text(average[0])} "
        f"rows per second over {duration_text(average[1])}."
    )
    grid = "".join(
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="grid"/>'
            '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
            PAD_LEFT,
            y,
            WIDTH - PAD_RIGHT,
            y,
            PAD_LEFT - 6,
            y + 4,
            rate_text(value),
        )
        for value, y in ((top * f, PAD_TOP + plot_h * (1 - f)) for f in (0, 0.5, 1))
    )
    svg = format_html(
        '<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
        'aria-labelledby="chart-title chart-desc" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<title id="chart-title">{title}</title><desc id="chart-desc">{summary}</desc>'
        "{grid}"
        '<polygon class="area" points="{area}"/>'
        '<polyline class="line" points="{line}" fill="none"/>'
        '<text x="{x0}" y="{ty}" class="axis">0 s</text>'
        '<text x="{x1}" y="{ty}" class="axis" text-anchor="end">{span}</text>'
        "</svg>"
        '<p class="chart-caption muted">{summary}</p>',
        w=WIDTH,
        h=HEIGHT,
        title=title,
        summary=summary,
        grid=mark_safe(grid),
        area=area,
        line=line,
        x0=PAD_LEFT,
        x1=WIDTH - PAD_RIGHT,
        ty=HEIGHT - 6,
        span=_duration(span),
    )
    return svg


def segbar_svg(segments: Sequence, *, small: bool = False) -> SafeString:
    """The bar of rows by state (progress.segments). Widths are attributes, so it needs no inline
    style (strict CSP); drawn here, not by a template loop, since every poll of the job page
    draws it again."""
    rects = format_html_join(
        "",
        '<rect class="seg seg-{}" data-segment="{}" data-rows="{}" x="{}" y="0" width="{}"'
        ' height="4"></rect>',
        (
            (seg.key, seg.key, seg.rows, f"{seg.offset:.2f}", f"{seg.percent:.2f}")
            for seg in segments
            if seg.rows
        ),
    )
    return format_html(
        '<svg class="segbar{}" viewBox="0 0 100 4" preserveAspectRatio="none" aria-hidden="true"'
        ' focusable="false" data-testid="segbar">\n'
        '  <rect class="seg-track" x="0" y="0" width="100" height="4"></rect>\n'
        "  {}\n</svg>",
        " small" if small else "",
        rects,
    )
