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


# The estimate's rate is measured by the clock over this much of the current working stretch.
CLOCK_WINDOW_S = 120.0


def clock_rate(
    samples: Sequence[Sequence[float]] | None, now: float, since: float | None = None
) -> float | None:
    """Rows per second by the clock over the last CLOCK_WINDOW_S since `since` (the current
    working stretch's start: a pause before it is not counted); None while too short to tell.

    The recent rate leaves out the waits between a job's turns on busy workers. Jobs that
    share the workers finish by the clock, so the estimate counts the waits in."""
    start = now - CLOCK_WINDOW_S if since is None else max(now - CLOCK_WINDOW_S, since)
    points = [(float(s[0]), float(s[1])) for s in samples or [] if len(s) >= 2]
    for i in range(len(points) - 1, 0, -1):
        if points[i][1] < points[i - 1][1]:
            points = points[i:]  # a retry put failed rows back: count from there
            break
    points = [p for p in points if p[0] >= start]
    if len(points) < 2:
        return None
    # Up to the last sample while they come (a poll between two is no slowdown); a wait for
    # the next turn that has lasted longer counts up to now.
    end = now if now - points[-1][0] > GAP_S else points[-1][0]
    if end - points[0][0] < MIN_SPAN_S:
        return None
    return max(0.0, points[-1][1] - points[0][1]) / (end - points[0][0])


def estimate_rate(
    samples: Sequence[Sequence[float]] | None, now: float, since: float | None = None
) -> float | None:
    """The rate an estimated completion divides by: the recent rate, or the clock's when that
    is lower or the recent one is unknown (a job's turn on busy workers has just begun, or it
    waits for the next); None while both are unknown."""
    return lower_known(recent_rate(samples, now), clock_rate(samples, now, since))


def lower_known(recent: float | None, clock: float | None) -> float | None:
    if recent and clock:
        return min(recent, clock)
    return clock or recent or None
