"""The Redis cache while Redis is away: a miss for reads, a no-op for writes, never an error."""

from __future__ import annotations

import socket

from batchhub.cache import RedisCache


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cache_whose_redis_is_away_misses_and_skips_writes():
    cache = RedisCache(f"redis://127.0.0.1:{closed_port()}/0", {})
    assert cache.get("k") is None and cache.get("k", "fallback") == "fallback"
    assert cache.get_many(["a", "b"]) == {}
    assert cache.has_key("k") is False
    cache.set("k", 1)
    cache.set_many({"a": 1})
    assert cache.add("k", 1) is False
    assert cache.delete("k") is False
    cache.delete_many(["a"])


def test_rate_limits_admit_while_redis_is_away():
    from batchhub import sliding_window

    cache = RedisCache(f"redis://127.0.0.1:{closed_port()}/0", {})
    outcome = sliding_window.hit(cache, "rl:k", limit=1, period=60, now=1000.0)
    assert outcome.allowed
    assert sliding_window.peek(cache, "rl:k", limit=1, period=60, now=1000.0).allowed
