"""A job's ``rate_limit`` (requests per minute), enforced across every worker process.

How: time is cut into slots of ``slot_seconds`` on the wall clock, the same grid in every
process. Each slot admits ``capacity`` requests, counted with ``cache.add`` + ``cache.incr`` on
the shared Django cache (Redis in production: SET NX and INCRBY, both atomic). A request may
only take a slot during the slot's first ``OPEN_FRACTION``; later arrivals wait for the next slot.

Why that bounds every rolling minute, not just calendar minutes: requests start inside
[slot start, slot start + OPEN_FRACTION × slot). A window of 60 s can then meet the open parts
of at most ``60 / slot + OPEN_FRACTION`` slots. Choosing ``slot = 60 / (slots_per_minute −
OPEN_FRACTION − SAFETY)`` keeps that at ``slots_per_minute`` (an integer), so at most
``capacity × slots_per_minute ≤ per_minute`` requests start in any 60 s. ``SAFETY`` leaves room
for the time between this function returning and the request reaching the server (another
~15% of a slot, ≈ 150 ms at the usual one-second slots). The price is a rate a little under
the limit: 119.5/min for a limit of 120, 5,975/min for 6,000.

Limits of the guarantee: worker machines must keep their clocks in sync (NTP); skew between
them adds up to ``skew / slot`` slots. The embedded default cache (FileBasedCache) has no atomic
add/incr of its own: there the two run under the file lock of ``batchhub.sliding_window``, which
every process on the machine shares. Call ``acquire`` right before the request
starts (in the thread that makes it): a row that waits in an executor queue after acquiring
would start late and bunch up with later ones.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from django.core.cache import cache

from batchhub.sliding_window import atomic

OPEN_FRACTION = 0.1
SAFETY = 0.15
KEY_PREFIX = "batchhub:ratelimit"

# Indirection so that tests can drive a simulated clock.
_now = time.time
_sleep = time.sleep


class RateLimitTimeout(TimeoutError):
    """``acquire`` could not get a slot within its timeout."""


@dataclass(frozen=True, slots=True)
class Plan:
    capacity: int  # requests per slot
    slots_per_minute: int
    slot_seconds: float

    @property
    def open_seconds(self) -> float:
        return self.slot_seconds * OPEN_FRACTION

    @property
    def effective_per_minute(self) -> float:
        return self.capacity * 60.0 / self.slot_seconds


def plan(per_minute: int) -> Plan:
    """Slots of ~1 s (a burst of per_minute/60 each) or, under 60/min, one request per slot."""
    if per_minute < 1:
        raise ValueError("per_minute must be at least 1")
    capacity = max(1, per_minute // 60)
    slots = per_minute // capacity
    return Plan(capacity, slots, 60.0 / (slots - OPEN_FRACTION - SAFETY))


def acquire(key: str, per_minute: int, *, timeout: float | None = None) -> None:
    """Block until one request under ``key`` may start without exceeding ``per_minute``.

    Raises RateLimitTimeout when ``timeout`` seconds would pass first.
    """
    p = plan(per_minute)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        now = _now()
        slot = math.floor(now / p.slot_seconds)
        if now - slot * p.slot_seconds < p.open_seconds and _take(key, per_minute, slot, p):
            return
        # Full or closed: sleep to the next slot start, plus a little jitter so that the waiting
        # processes do not all hit the cache in the same millisecond.
        wait = (slot + 1) * p.slot_seconds - now + random.uniform(0, p.open_seconds * 0.2)
        if deadline is not None and time.monotonic() + wait > deadline:
            raise RateLimitTimeout(f"no request slot for {key} within {timeout:g} s")
        _sleep(wait)


def _take(key: str, per_minute: int, slot: int, p: Plan) -> bool:
    cache_key = f"{KEY_PREFIX}:{key}:{per_minute}:{slot}"
    # The counter only has to outlive its slot; a generous expiry costs a few bytes.
    expiry = math.ceil(p.slot_seconds) + 60
    with atomic(cache):
        cache.add(cache_key, 0, timeout=expiry)
        try:
            taken = cache.incr(cache_key)
        except ValueError:  # expired or evicted between add and incr: full, try the next slot
            return False
    return taken <= p.capacity
