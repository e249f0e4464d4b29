"""A processing job's recent rate from its progress samples: one measure for its page and its API.

Samples are ``[timestamp, rows done]`` pairs the workers append about once a second. The page and
the API each had their own reading; the API's counted a pause as seconds of work, so right after
a resume it stated half the rate, and an estimate twice as far, as the page beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

# The rate is measured over this much recent working time; gaps longer than GAP_S between
# samples (a pause, a stall, waiting for a worker) are not working time and are skipped.
RATE_WINDOW_S = 30.0
GAP_S = 10.0
# Below this much measured time the rate is still too noisy to show (a first chunk lands at once).
MIN_SPAN_S = 3.0
# A processing job without a new sample for this long is stalled: its rate is zero.
STALLED_S = 30.0


def recent_rate(samples: Sequence[Sequence[float]] | None, now: float) -> float | None:
    """Rows per second over the last RATE_WINDOW_S of working time; None while still unknown."""
    points = [(float(s[0]), float(s[1])) for s in samples or [] if len(s) >= 2]
    if len(points) < 2:
        return None
    if now - points[-1][0] > STALLED_S:
        return 0.0
    rows = seconds = 0.0
    for (ta, da), (tb, db) in zip(reversed(points[:-1]), reversed(points[1:]), strict=True):
        if db < da:
            # A retry put failed rows back: what ran before it (a cancel's burst included, as
            # cancelled rows count as done) says nothing of the rows running now.
            break
        span = tb - ta
        if span <= 0 or span > GAP_S:
            if seconds:
                break  # the recent stretch of work ends at the pause before it
            continue
        rows += max(0.0, db - da)
        seconds += span
        if seconds >= RATE_WINDOW_S:
            break
    if seconds < MIN_SPAN_S:
        return None
    return rows / seconds
