"""A status poll's cache reads in one round trip: the API key's entry, the job's live status and
the rate limit's count.

Each of the three is its own cache call elsewhere (apikeys/keycache.py, jobs/livestatus.py, the
throttle's sliding window), and on Redis each is a network round trip, most of what a poll from
the cache costs (docs/performance.md). `fetch` makes them one Lua script: it reads both keys and,
only when the entry vouches for a usable key (active owner, this key, not expired), counts the
request in that key's bucket, as the throttle would after authentication. The readers then take
what it read instead of reading again (`prefetch` leaves it on the request for them). On the
other caches (the file cache of the embedded default, the per-process one) the same function
makes the same reads one after the other: they have no round trips to save.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.contrib.sessions.backends.cached_db import SessionStore as CachedDbSession
from rest_framework.exceptions import AuthenticationFailed

from apikeys import keycache, keyformat
from apikeys.auth import APIKeyAuthentication
from batchhub import sliding_window
from batchhub.api import GroupRateThrottle
from batchhub.cache import AWAY

from . import livestatus

logger = logging.getLogger(__name__)

# KEYS: the key's entry, the job's live status. ARGV: the key's lookup id, the time (seconds), the
# bucket's name around the key's id (head, tail), then sliding_window_hit's arguments; a limit
# of -1: no rate for this request, count nothing.
_SCRIPT = (
    sliding_window.LUA_HIT
    + """
local entry = redis.call('GET', KEYS[1])
local live = redis.call('GET', KEYS[2])
local counted = false
if entry and tonumber(ARGV[7]) >= 0 then
  local ok, e = pcall(cjson.decode, entry)
  if ok and type(e) == 'table' and e.is_active == true and e.lookup_id == ARGV[1]
      and type(e.key_id) == 'number'
      and (type(e.expires_ts) ~= 'number' or e.expires_ts > tonumber(ARGV[2])) then
    local bucket = ARGV[3] .. string.format('%d', e.key_id) .. ARGV[4]
    counted = sliding_window_hit(bucket, ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  end
end
return {entry or false, live or false, counted}
"""
)
_ID = "@key@"  # stands for the key's id in the bucket's name


@dataclass(slots=True)
class Fetched:
    raw_key: str
    public_id: str
    entry: str | None  # the key's entry as stored (keycache.parse reads it)
    live: str | None  # the job's live-status payload (livestatus.read takes it)
    rate_counted: tuple[str, sliding_window.Outcome] | None  # (bucket, outcome) when counted
    # The key's lookup id as fetch parsed it, so that the key check need not parse it again.
    lookup_id: str = ""


def fetch(raw_key: str, public_id: str, *, scope: str | None, now: float) -> Fetched | None:
    """Everything a poll of `public_id` with `raw_key` reads from the cache; None when the key
    is not one (its check answers) or the cache is away (each reader then tries on its own).

    `now`: the rate limit's clock (the throttle's timer); a key's expiry is read on the wall's."""
    parsed = keyformat.parse(raw_key)
    if parsed is None or not livestatus.plausible_id(public_id):
        return None
    digest = keyformat.digest(parsed.raw)
    limit, period = _rate(scope)
    livestatus.drop_unsent()  # before reading a key that a refused write left behind
    redis = livestatus._redis()
    if redis is None:
        return _fetch_in_steps(
            raw_key, public_id, digest, parsed.lookup_id, scope, limit, period, now
        )
    head, tail = redis.make_and_validate_key(_bucket(scope or "", _ID)).split(_ID)
    try:
        entry, live, counted = redis.run_script(
            _SCRIPT,
            [keycache.cache_key(digest), livestatus.cache_key(public_id)],
            [parsed.lookup_id, repr(time.time()), head, tail]
            + (
                sliding_window.arguments(limit, period, now) if limit is not None else [0, 0, -1, 0]
            ),
        )
    except AWAY:
        return None
    entry_text = entry.decode("utf-8", "replace") if entry else None
    rate_counted = None
    if counted:
        key_id = keycache.parse(entry_text)["key_id"]
        rate_counted = (_bucket(scope, key_id), sliding_window.outcome(counted))
    return Fetched(
        raw_key,
        public_id,
        entry_text,
        livestatus.payload_of(live),
        rate_counted=rate_counted,
        lookup_id=parsed.lookup_id,
    )


def _fetch_in_steps(raw_key, public_id, digest, lookup_id, scope, limit, period, now) -> Fetched:
    entry_text = keycache.read_text(digest)
    entry = keycache.parse(entry_text)
    rate_counted = None
    if entry is not None and limit is not None and _usable(entry, lookup_id, time.time()):
        bucket = _bucket(scope, entry["key_id"])
        rate_counted = (bucket, sliding_window.hit(_throttle_cache(), bucket, limit, period, now))
    return Fetched(
        raw_key, public_id, entry_text, livestatus._load(public_id), rate_counted, lookup_id
    )


def _usable(entry: dict[str, Any], lookup_id: str, now: float) -> bool:
    # What the script checks before counting: the key check (apikeys.services) passes it too.
    expires = entry.get("expires_ts")
    return entry.get("lookup_id") == lookup_id and (expires is None or expires > now)


def _rate(scope: str | None) -> tuple[int | None, float | None]:
    if scope is None:
        return None, None
    throttle = GroupRateThrottle()
    throttle.scope = scope
    rate = throttle.get_rate()
    if rate is None:
        return None, None
    return throttle.parse_rate(rate)


def _bucket(scope: str, key_id: Any) -> str:
    # GroupRateThrottle.get_cache_key's name for an API key's bucket.
    return f"rate:{scope}:key:{key_id}"


def _throttle_cache():
    return GroupRateThrottle.cache


def prefetch(request, view, public_id: str) -> None:
    """Before DRF authenticates a poll: read what it will read, in one trip, and leave it on the
    request for the key check, the throttle and the status read (each checks it is theirs)."""
    if getattr(request, "poll_fetched", None) is not None:
        return  # read already, by jobs/fast_status.py, which left the answer to the stack
    try:
        raw = APIKeyAuthentication()._presented_key(request)
    except AuthenticationFailed:
        return  # two different keys: the authentication refuses the request
    if not raw:
        return  # a browser session: its own reads
    throttle = GroupRateThrottle()
    try:
        fetched = fetch(
            raw, public_id, scope=throttle.get_scope(request, view), now=throttle.timer()
        )
    except Exception:
        # The cache failed in a way the soft mode does not catch: each reader tries on its own.
        logger.debug("poll: reads left to each reader", exc_info=True)
        return
    if fetched is not None:
        hand_over(request, fetched)


def hand_over(request, fetched: Fetched) -> None:
    """Leave what `fetch` read on the request, for the key check, the throttle (whose count it
    made) and the status read."""
    request.poll_fetched = fetched
    request.rate_counted = fetched.rate_counted


def live(request, public_id: str) -> Any:
    """The job's key as `prefetch` read it, for livestatus.read; else livestatus.READ."""
    fetched = getattr(request, "poll_fetched", None)
    if fetched is None or fetched.public_id != public_id:
        return livestatus.READ
    return fetched.live


def prefetch_page(request, public_id: str) -> None:
    """Before the job page's poll (its live part, once a second) signs its user in: the session
    and the job's live status in one trip instead of two, left where the session and `page_live`
    read them. Redis only; the user's own entry (accounts/session_user.py) is still read after,
    since its name comes from the session.

    The session is filled only with what its own load would have read first (the same cache
    key, found there); anything else is left to it (a session not in the cache: the database)."""
    redis = livestatus._redis()
    session = getattr(request, "session", None)
    if _take_page_hand_over(request, session, public_id):
        return
    if (
        redis is None
        or request.method != "GET"
        or not isinstance(session, CachedDbSession)
        or session._cache is not redis
        or hasattr(session, "_session_cache")  # loaded already
        or session.session_key is None
        or not livestatus.current(public_id)
        or not livestatus.plausible_id(public_id)
    ):
        return
    try:
        data, live, _ = session_and_live(redis, session.cache_key, public_id)
        request.page_live = (public_id, live)
    except Exception:
        # Away, or a value it cannot read: the session and the status read on their own.
        logger.debug("poll: the page's reads left to each reader", exc_info=True)
        return
    if isinstance(data, dict):
        session._session_cache = data


def hand_over_page(request, session_key: str, data: Any, public_id: str, live: Any) -> None:
    """Leave what `session_and_live` read on the request, for `prefetch_page` and `page_live`:
    read below the stack (accounts/fast_page_poll.py), not read again if the stack answers."""
    request.page_live = (public_id, live)
    request.page_session = (session_key, data)


def _take_page_hand_over(request, session, public_id: str) -> bool:
    handed = getattr(request, "page_session", None)
    live = getattr(request, "page_live", None)
    if handed is None or live is None or live[0] != public_id:
        return False
    session_key, data = handed
    if (
        isinstance(session, CachedDbSession)
        and session.session_key == session_key
        and isinstance(data, dict)
        and not hasattr(session, "_session_cache")
    ):
        session._session_cache = data  # a session not in the cache: its own load, the database
    return True


def session_and_live(
    redis, session_cache_key: str, public_id: str, also: str | None = None
) -> tuple[Any, Any, Any]:
    """A session's data (None: not in the cache), the job's live status (livestatus.payload_of)
    and the cache's value under the key `also` (None: not asked, or not there), in one trip to
    the Redis cache `redis`."""
    names = [session_cache_key, livestatus.cache_key(public_id)]
    if also is not None:
        names.append(also)
    values = redis._cache.get_client(write=False).mget(
        [redis.make_and_validate_key(name) for name in names]
    )
    loads = redis._cache._serializer.loads
    data = None if values[0] is None else loads(values[0])
    other = None if also is None or values[2] is None else loads(values[2])
    return data, livestatus.payload_of(values[1]), other


def page_live(request, public_id: str) -> tuple[int, str] | None:
    """The job's live status as `prefetch_page` read it, else as livestatus.load reads it."""
    prefetched = getattr(request, "page_live", None)
    if prefetched is not None and prefetched[0] == public_id:
        return prefetched[1]
    return livestatus.load(public_id)
