"""The API's rate-limit counter admits exactly the limit when clients hit it concurrently.

8 processes (as gunicorn's workers are) or 8 threads race for one bucket with 2,000 requests
against a limit of 1,200 a minute, all inside one window: exactly 1,200 may pass. A counter that
reads then writes lets them all through (1,500 of 1,500 before).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache

from batchhub import sliding_window
from batchhub.cache import RedisCache

LIMIT, PERIOD = 1200, 60
CLIENTS, EACH = 8, 250
NOW = 1_800_000_000.0 + 1.0  # one second into a window: nothing carried over from a previous one


def _redis_url() -> str:
    for name in ("REDIS_URL", "CACHE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("redis://", "rediss://")):
            return url
    pytest.skip("needs Redis (REDIS_URL or CACHE_URL=redis://…); `make test` starts one")


def _hammer(make_cache, key: str, barrier, results) -> None:
    cache = make_cache()  # each process builds its own client, as a web process does
    barrier.wait()
    results.put(
        sum(sliding_window.hit(cache, key, LIMIT, PERIOD, NOW).allowed for _ in range(EACH))
    )


def _race_processes(make_cache, key: str) -> list[int]:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(CLIENTS), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(make_cache, key, barrier, results))
        for _ in range(CLIENTS)
    ]
    for p in procs:
        p.start()
    counts = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return counts


def _race_threads(cache, key: str) -> list[int]:
    barrier = threading.Barrier(CLIENTS)

    def client() -> int:
        barrier.wait()
        return sum(sliding_window.hit(cache, key, LIMIT, PERIOD, NOW).allowed for _ in range(EACH))

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda _: client(), range(CLIENTS)))


class _Redis:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self) -> RedisCache:
        return RedisCache(self.url, {})


class _Files:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __call__(self) -> FileBasedCache:
        return FileBasedCache(self.directory, {})


def test_redis_admits_exactly_the_limit_across_processes():
    make = _Redis(_redis_url())
    key = f"test:rate:{uuid.uuid4().hex}"

    counts = _race_processes(make, key)

    assert sum(counts) == LIMIT, counts
    assert sliding_window.state(make(), key)[1:] == (LIMIT, 0)
    assert not sliding_window.hit(make(), key, LIMIT, PERIOD, NOW).allowed


def test_redis_admits_exactly_the_limit_across_threads():
    cache = RedisCache(_redis_url(), {})
    counts = _race_threads(cache, f"test:rate:{uuid.uuid4().hex}")
    assert sum(counts) == LIMIT, counts


def test_the_file_cache_admits_exactly_the_limit_across_processes(tmp_path):
    make = _Files(str(tmp_path / "cache"))
    key = "rate:read:key:1"

    counts = _race_processes(make, key)

    assert sum(counts) == LIMIT, counts
    assert sliding_window.state(make(), key)[1:] == (LIMIT, 0)


def test_the_file_cache_admits_exactly_the_limit_across_threads(tmp_path):
    counts = _race_threads(FileBasedCache(str(tmp_path / "cache"), {}), "rate:read:key:1")
    assert sum(counts) == LIMIT, counts


def test_the_local_memory_cache_admits_exactly_the_limit_across_threads():
    counts = _race_threads(LocMemCache(f"test-{uuid.uuid4().hex}", {}), "rate:read:key:1")
    assert sum(counts) == LIMIT, counts


@pytest.mark.parametrize("backend", ["redis", "file", "locmem"])
def test_the_previous_window_still_weighs_on_the_next(backend, tmp_path):
    """Same arithmetic on every backend: the Lua script and the locked Python agree."""
    if backend == "redis":
        cache = RedisCache(_redis_url(), {})
    elif backend == "file":
        cache = FileBasedCache(str(tmp_path / "cache"), {})
    else:
        cache = LocMemCache(f"test-{uuid.uuid4().hex}", {})
    key = f"test:rate:{uuid.uuid4().hex}"
    start = 1020.0  # a window boundary (17 × 60)
    assert sliding_window.hit(cache, key, 2, 60, start).allowed
    assert sliding_window.hit(cache, key, 2, 60, start + 30).allowed
    assert not sliding_window.hit(cache, key, 2, 60, start + 59).allowed

    # 15 s into the next window the two earlier requests still weigh 2 × 45/60 = 1.5.
    assert not sliding_window.hit(cache, key, 2, 60, start + 75).allowed
    # At 30 s they weigh 1: one more fits, then none.
    outcome = sliding_window.hit(cache, key, 2, 60, start + 90)
    assert (outcome.allowed, outcome.count, outcome.before) == (True, 1, 2)
    assert not sliding_window.hit(cache, key, 2, 60, start + 91).allowed
    # Two windows later nothing is carried over.
    assert sliding_window.hit(cache, key, 2, 60, start + 190).before == 0
