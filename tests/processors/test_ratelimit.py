from __future__ import annotations

import math
import threading
import time

import pytest

from jobs import ratelimit


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.fixture
def clock(monkeypatch):
    """A simulated wall clock: the limiter's sleeps advance it instantly."""
    state = {"now": 1_700_000_000.123}
    monkeypatch.setattr(ratelimit, "_now", lambda: state["now"])

    def sleep(seconds: float) -> None:
        state["now"] += seconds

    monkeypatch.setattr(ratelimit, "_sleep", sleep)
    return state


@pytest.mark.parametrize("per_minute", [1, 2, 7, 59, 60, 61, 119, 120, 125, 600, 3000])
def test_no_rolling_minute_exceeds_the_limit_on_a_simulated_clock(locmem_cache, clock, per_minute):
    starts = []
    minutes = 4
    while clock["now"] < 1_700_000_000.123 + minutes * 60:
        ratelimit.acquire("job_sim", per_minute)
        starts.append(clock["now"])
        clock["now"] += 0.001  # the request itself takes a moment to leave
    assert max_in_window(starts, 60.0) <= per_minute
    # ...and the limiter does not waste the budget: within 75% of the limit over four minutes.
    assert len(starts) >= 0.75 * per_minute * minutes


def test_threads_share_the_budget_atomically(locmem_cache):
    # 600/min = slots of ~1 s holding 10 requests each: 16 threads racing for 2.5 s.
    starts: list[float] = []
    lock = threading.Lock()
    begin = time.time()
    stop = begin + 2.0

    def worker() -> None:
        while time.time() < stop:
            ratelimit.acquire("job_threads", 600, timeout=5)
            with lock:
                starts.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plan = ratelimit.plan(600)
    assert plan.capacity == 10
    # Any window shorter than a slot holds at most one slot's requests (plus the next slot's when
    # it straddles a boundary): the per-minute bound follows from this, see the module docstring.
    assert max_in_window(starts, plan.slot_seconds - plan.open_seconds) <= 2 * plan.capacity
    assert max_in_window(starts, plan.open_seconds) <= plan.capacity
    # Slots whose open part meets a 2 s window: at most floor(2 / slot + open fraction) + 1.
    in_window = [t for t in starts if t < stop]
    slots = math.floor(2.0 / plan.slot_seconds + ratelimit.OPEN_FRACTION) + 1
    assert plan.capacity <= len(in_window) <= plan.capacity * slots


def test_keys_are_independent_and_timeout_raises(locmem_cache, clock):
    ratelimit.acquire("job_a", 1)
    ratelimit.acquire("job_b", 1)  # another job has its own budget
    started = time.monotonic()
    with pytest.raises(ratelimit.RateLimitTimeout):
        ratelimit.acquire("job_a", 1, timeout=0.1)
    assert time.monotonic() - started < 0.2


def test_plan_rates():
    assert ratelimit.plan(120).effective_per_minute == pytest.approx(119.5)
    assert ratelimit.plan(1).effective_per_minute == pytest.approx(0.75)
    with pytest.raises(ValueError):
        ratelimit.plan(0)
