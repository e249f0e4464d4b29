"""A sliding-window request counter, checked and counted in one atomic step on every cache.

The cache holds, per bucket, (window number, requests in it, requests in the window before): a
constant-size value. The requests of the last period are estimated as this window's plus the
previous window's weighted by how much of it the last period still covers, so no burst of twice
the rate gets through around a window's edge, as it would with plain fixed windows.

Reading the count and writing it back as two cache calls lets concurrent requests read the same
count and all pass (docs/performance.md has the figures). So:
- on Redis, one Lua script reads, decides and writes (one round trip, atomic on the server);
- on the file cache of the embedded default, the read and write happen under an exclusive
  ``flock`` on a file beside the cache's entries, which every process on the machine shares;
- on the in-process caches (locmem in tests), under a thread lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.utils.connection import ConnectionProxy

from .cache import AWAY, RedisCache

LOCK_FILE = "batchhub-counters.lock"  # not *.djcache: the file cache's clear() and cull skip it
_thread_lock = threading.Lock()

# A Lua function other scripts include (jobs/poll.py counts a poll with its other reads).
# bucket: the key (a hash: w = window, c = count, b = before); window number, fraction of the
# window gone (0..1), limit, expiry in seconds, as `arguments` gives them.
LUA_HIT = """
local function sliding_window_hit(bucket, window, gone, limit, expiry)
  window, gone, limit = tonumber(window), tonumber(gone), tonumber(limit)
  local v = redis.call('HMGET', bucket, 'w', 'c', 'b')
  local stored = tonumber(v[1])
  local count = tonumber(v[2]) or 0
  local before = tonumber(v[3]) or 0
  if stored ~= window then
    if stored == window - 1 then before = count else before = 0 end
    count = 0
  end
  if before * (1 - gone) + count + 1 > limit then
    return {0, count, before}
  end
  redis.call('HSET', bucket, 'w', window, 'c', count + 1, 'b', before)
  redis.call('EXPIRE', bucket, expiry)
  return {1, count + 1, before}
end
"""
_SCRIPT = LUA_HIT + "return sliding_window_hit(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    count: int  # requests counted in this window (this one included when allowed)
    before: int  # requests of the previous window


def hit(cache: Any, key: str, limit: int, period: float, now: float) -> Outcome:
    """Count one request under ``key`` if it fits ``limit`` per ``period`` seconds."""
    cache = backend(cache)
    window, into = divmod(now, period)
    expiry = max(1, int(2 * period - into) + 1)
    if isinstance(cache, RedisCache):
        try:
            reply = cache.run_script(_SCRIPT, [key], arguments(limit, period, now))
        except AWAY:
            # Redis restarting: admit rather than answer 500; the limit resumes with it.
            return Outcome(True, 0, 0)
        return outcome(reply)
    with atomic(cache):
        stored, count, before = cache.get(key) or (window, 0, 0)
        if stored != window:
            # A new window: the one that just ended becomes "before" (older ones count nothing).
            count, before = 0, (count if stored == window - 1 else 0)
        if before * (1 - into / period) + count + 1 > limit:
            return Outcome(False, count, before)
        cache.set(key, (window, count + 1, before), expiry)
        return Outcome(True, count + 1, before)


def arguments(limit: int, period: float, now: float) -> list[Any]:
    """LUA_HIT's arguments after the bucket: window, fraction gone, limit, expiry."""
    window, into = divmod(now, period)
    return [int(window), repr(into / period), limit, max(1, int(2 * period - into) + 1)]


def outcome(reply: list[Any]) -> Outcome:
    """LUA_HIT's reply as an Outcome."""
    allowed, count, before = reply
    return Outcome(bool(allowed), int(count), int(before))


def peek(cache: Any, key: str, limit: int, period: float, now: float) -> Outcome:
    """Whether one more request under ``key`` would fit, counting nothing."""
    window, into = divmod(now, period)
    stored, count, before = state(cache, key) or (window, 0, 0)
    if stored != window:
        count, before = 0, (count if stored == window - 1 else 0)
    return Outcome(before * (1 - into / period) + count + 1 <= limit, count, before)


def wait_seconds(outcome: Outcome, limit: int, period: float, now: float) -> float:
    """Seconds until one more request fits, as the previous window's weight runs down."""
    count, before, into = outcome.count, outcome.before, now % period
    if count + 1 <= limit and before:
        # Within this window: before * (1 - t / period) + count + 1 <= limit.
        return max(0.0, (1 - (limit - count - 1) / before) * period - into)
    # In the next window, this one's count is the weighted one.
    if not count:
        return period - into
    return (period - into) + max(0.0, 1 - (limit - 1) / count) * period


def state(cache: Any, key: str) -> tuple[int, int, int] | None:
    """(window, count, before) of a bucket, or None: what hit() stored, on any backend."""
    cache = backend(cache)
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=False)
        try:
            window, count, before = client.hmget(cache.make_and_validate_key(key), "w", "c", "b")
        except AWAY:
            return None
        if window is None:
            return None
        return int(window), int(count), int(before)
    value = cache.get(key)
    return None if value is None else tuple(int(v) for v in value)  # type: ignore[return-value]


def atomic(cache: Any):
    """A context in which a get-then-set on ``cache`` is not interleaved with another one's.

    Redis needs none for its atomic commands (add, incr); the file cache gets a lock shared by
    every process using its directory; other backends live in one process: a thread lock.
    """
    cache = backend(cache)
    if isinstance(cache, RedisCache):
        return nullcontext()
    if isinstance(cache, FileBasedCache):
        return _file_lock(cache._dir)
    return _thread_lock


def backend(cache: Any) -> Any:
    """The backend behind ``django.core.cache.cache``, a proxy isinstance cannot see through."""
    if isinstance(cache, ConnectionProxy):
        return caches[cache._alias]
    return cache


@contextmanager
def _file_lock(directory: str) -> Iterator[None]:
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Each call opens its own descriptor, so the lock also excludes other threads.
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
