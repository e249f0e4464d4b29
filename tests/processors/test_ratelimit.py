from __future__ import annotations

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


class _Blocked(Exception):
    """Raised by the frozen clock's sleep: the limiter told this thread to wait for a slot."""


def test_threads_share_the_budget_atomically(locmem_cache, monkeypatch):
    # 600/min = slots of ~1 s holding 10 requests each. On a frozen clock, 16 threads released
    # together take from one slot until each is told to wait: the slot admits exactly its 10.
    plan = ratelimit.plan(600)
    assert plan.capacity == 10
    now = {"t": 1_700_000_000 // plan.slot_seconds * plan.slot_seconds + plan.open_seconds / 2}
    monkeypatch.setattr(ratelimit, "_now", lambda: now["t"])

    def blocked(seconds: float) -> None:
        raise _Blocked

    monkeypatch.setattr(ratelimit, "_sleep", blocked)

    def race() -> int:
        admitted: list[int] = []
        barrier = threading.Barrier(16)

        def worker() -> None:
            barrier.wait()
            try:
                while True:
                    ratelimit.acquire("job_threads", 600)
                    admitted.append(1)
            except _Blocked:
                pass

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(admitted)

    assert race() == plan.capacity
    assert race() == 0  # the slot stays full
    now["t"] += plan.slot_seconds  # the next slot, open again
    assert race() == plan.capacity
    now["t"] += plan.open_seconds  # past its open part: nobody may start
    assert race() == 0


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
