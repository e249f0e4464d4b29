"""Each job's live status in the shared cache, so that a status poll needs no database.

The engine publishes a job's row, as it just wrote it, where the row changes: `states.transition`,
the runner's sync points and the controls. The key holds "<version> <newest event id> <payload>":
the payload a plain JSON dict (never a pickled object) of the fields the job object and the job
page show and the owner's id; the version the row's `updated_at` in microseconds. A write keeps
the newer payload, so a publish that arrives late never replaces a newer one, and the highest
event id either side knows (ids only grow), so it still brings the event it recorded. A caller
that recorded an event passes its id; a sync point records none and passes NO_NEW_EVENT, and the
database is asked only when the key is missing. On Redis the compare and the write are one Lua
script, on the file or per-process cache (one machine, the embedded default) a read then a write.

Readers (`read`) answer from the key when it is there, belongs to the asking user and the job has
not expired, else they go to the database as before (`None`). Nothing here raises into its
caller: a cache that is away is a miss on read and a skipped write on publish.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from typing import Any

import orjson
from django.core.cache import cache, caches
from django.db import models, transaction
from django.utils import timezone

from batchhub import jsonsafe

from .models import Job, JobEvent

try:
    import fcntl
except ImportError:  # not on Windows: the thread lock alone
    fcntl = None

logger = logging.getLogger(__name__)

# A key lives this long after its last write: long enough for a paused job's page, short enough
# that abandoned keys go away by themselves.
LIVE_SECONDS = 3600
# A deleted job's key: no later publish can win over it, and readers go to the database (404).
GONE = 2**53 - 1

# Fields a poll does not show; the rest of the row is in the key.
_LEFT_OUT = frozenset({"input_file", "idempotency_key", "request_hash", "throttle_streak"})
_FIELDS = [f for f in Job._meta.concrete_fields if f.name not in _LEFT_OUT]
_DATETIMES = frozenset(f.attname for f in _FIELDS if isinstance(f, models.DateTimeField))
_ATTNAMES = frozenset(f.attname for f in _FIELDS)

# KEYS[1]: the job's key, "<version> <newest event id> <payload>".
# ARGV: version, newest event id (a lower bound: the id the caller knows), payload, seconds to
# live, and 1 when the caller's event id is the newest one (it may then create a missing key).
# The payload is the newer version's; the event id the highest either side knows (ids only grow),
# so a write that arrives late still brings the event it recorded. Returns 1 written, 0 not
# needed, 2: no key and the caller's event id may be stale (it asks the database, then again).
_CAS = """
local old = redis.call('GET', KEYS[1])
local nv, ne = tonumber(ARGV[1]), tonumber(ARGV[2])
if not old then
  if ARGV[5] ~= '1' then
    return 2
  end
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3], 'EX', ARGV[4])
  return 1
end
local ov, oe, rest = string.match(old, '^(%d+) (%d+) (.*)$')
if not ov then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3], 'EX', ARGV[4])
  return 1
end
local newer_event = ne > tonumber(oe)
if nv >= tonumber(ov) then
  local e = newer_event and ARGV[2] or oe
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. e .. ' ' .. ARGV[3], 'EX', ARGV[4])
  return 1
end
if newer_event then
  redis.call('SET', KEYS[1], ov .. ' ' .. ARGV[2] .. ' ' .. rest, 'KEEPTTL')
  return 1
end
return 0
"""
_NEEDS_EVENT_ID = "needs the newest event id"

# The caller recorded no event (a sync point): the key's newest event id stands. Only when the
# key is missing does the database say which it is.
NO_NEW_EVENT = -1

# Which public id a job's pk has, for `withdraw` (called when the database is away).
_names: dict[int, str] = {}
# Keys this process could not write (the cache was away or refused): dropped before its next
# cache use, so that a key that missed a control's publish never keeps the state from before it.
# Readers then ask the database until the next publish writes the key again.
_unsent: set[str] = set()


def cache_key(public_id: str) -> str:
    return f"livestatus:{public_id}"


def _redis():
    """The Redis cache backend when the default cache is one (it runs scripts), else None."""
    from batchhub.cache import RedisCache

    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def snapshot(job: Job) -> dict[str, Any]:
    """The job's row as a plain dict of JSON values (timestamps as ISO strings)."""
    data: dict[str, Any] = {}
    for field in _FIELDS:
        value = getattr(job, field.attname)
        if field.attname in _DATETIMES and value is not None:
            value = value.isoformat()
        data[field.attname] = value
    return data


def _version(job: Job) -> int:
    stamp = job.updated_at or timezone.now()
    return int(stamp.timestamp() * 1_000_000)


def newest_event_id(job_pk: int) -> int:
    return (
        JobEvent.objects.filter(job_id=job_pk).order_by("-id").values_list("id", flat=True).first()
        or 0
    )


def publish(job: Job, last_event_id: int | None = None) -> None:
    """Publish `job` as the caller just saved it, once the transaction commits (at once outside
    one); a rolled-back change is never published. Never raises.

    `last_event_id`: the newest event id of the job as the caller knows it (the event it just
    recorded); None: the database says, when the transaction has committed; NO_NEW_EVENT: the
    caller recorded none, the key's stands."""
    try:
        payload = jsonsafe.dumps(snapshot(job))
        version = _version(job)
    except Exception:
        logger.warning("job %s: status not published", job.pk, exc_info=True)
        return
    if len(_names) > 10_000:
        _names.clear()  # a long-lived worker only needs the jobs it is working on
    _names[job.pk] = job.public_id
    transaction.on_commit(lambda: _write(job.pk, job.public_id, version, last_event_id, payload))


def forget(job: Job) -> None:
    """The job is being deleted: its key says so for good (readers go to the database)."""
    transaction.on_commit(lambda: _write(job.pk, job.public_id, GONE, 0, "null"))


def withdraw(job_pk: int) -> None:
    """The engine lost the database: drop the job's key, so polls ask the database as the engine
    does (a 503 while it is away) instead of a figure nobody can confirm. The next sync point
    publishes again."""
    public_id = _names.get(job_pk)
    if public_id is None:
        return
    try:
        cache.delete(cache_key(public_id))
    except Exception:
        logger.debug("job %s: key not withdrawn", public_id, exc_info=True)


def _write(job_pk: int, public_id: str, version: int, event_id: int | None, payload: str) -> None:
    _unsent.discard(public_id)
    drop_unsent()
    try:
        known = event_id if event_id is not None else newest_event_id(job_pk)
    except Exception:
        # The database failed under the caller: the caller sees it on its own next statement.
        logger.debug("job %s: status not published", public_id, exc_info=True)
        return
    sent = _send(public_id, (version, known), payload)
    if sent is _NEEDS_EVENT_ID:
        try:
            known = newest_event_id(job_pk)
        except Exception:
            logger.debug("job %s: status not published", public_id, exc_info=True)
            return
        sent = _send(public_id, (version, known), payload)
    if not sent:
        _unsent.add(public_id)


def plausible_id(public_id: str) -> bool:
    """Whether `public_id` can name a key (else it is no job's id: the database answers 404)."""
    return public_id.isascii() and public_id.isprintable() and len(public_id) <= 100


def drop_unsent() -> None:
    """Drop the keys this process could not write, before it uses the cache again."""
    for public_id in list(_unsent):
        try:
            cache.delete(cache_key(public_id))
        except Exception:
            return  # still away: the next cache use tries again
        _unsent.discard(public_id)


def current(public_id: str) -> bool:
    """Whether the job's key can be believed now (no write of this process to it was refused)."""
    drop_unsent()
    return public_id not in _unsent


def _send(public_id: str, version: tuple[int, int], payload: str) -> bool | str:
    """Write the key as _CAS does; False when the cache refused the write, _NEEDS_EVENT_ID when
    the key is missing and the caller's event id may be stale."""
    stamp, event_id = version
    newest = event_id != NO_NEW_EVENT
    try:
        redis = _redis()
        if redis is not None:
            reply = redis.run_script(
                _CAS,
                [cache_key(public_id)],
                [stamp, max(event_id, 0), payload, LIVE_SECONDS, int(newest)],
            )
        else:
            reply = _send_in_steps(public_id, stamp, max(event_id, 0), payload, newest)
        return _NEEDS_EVENT_ID if reply == 2 else True
    except Exception:
        # Publishing never fails a job: the next write, or the database, answers the readers.
        logger.warning("job %s: status not published", public_id, exc_info=True)
        return False


_IN_TURN = threading.Lock()


@contextlib.contextmanager
def _in_turn():
    """One read then write at a time: between another's read and write, a newer state written
    would be overwritten by the older (a cancel's late rows publish at once, from threads; two
    worker processes' sync points too). A lock file beside the file cache, held by each call's
    own open file, keeps out threads and processes alike; a thread lock, the per-process cache."""
    directory = getattr(cache, "_dir", None)
    if directory is None or fcntl is None:
        with _IN_TURN:
            yield
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "livestatus.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file lets the lock go


def _send_in_steps(public_id: str, stamp: int, event_id: int, payload: str, newest: bool) -> int:
    # The file or per-process cache: what the script does, as a read then a write.
    with _in_turn():
        return _compare_and_set(public_id, stamp, event_id, payload, newest)


def _compare_and_set(public_id: str, stamp: int, event_id: int, payload: str, newest: bool) -> int:
    old = cache.get(cache_key(public_id))
    if old is None:
        if not newest:
            return 2
        cache.set(cache_key(public_id), (stamp, event_id, payload), LIVE_SECONDS)
        return 1
    old_stamp, old_event, old_payload = old
    if stamp >= old_stamp:
        stored = (stamp, max(event_id, old_event), payload)
    elif event_id > old_event:
        stored = (old_stamp, event_id, old_payload)
    else:
        return 0
    cache.set(cache_key(public_id), stored, LIVE_SECONDS)
    return 1


def payload_of(raw: bytes | None) -> tuple[int, str] | None:
    """(newest event id, payload) of a key's value as Redis stores it, or None."""
    if raw is None:
        return None
    _v, event_id, payload = raw.decode().split(" ", 2)
    return int(event_id), payload


def _load(public_id: str) -> tuple[int, str] | None:
    """(newest event id, payload JSON text) of the job's key, or None."""
    redis = _redis()
    if redis is not None:
        client = redis._cache.get_client(write=False)
        return payload_of(client.get(redis.make_and_validate_key(cache_key(public_id))))
    stored = cache.get(cache_key(public_id))
    return None if stored is None else (int(stored[1]), stored[2])


def load(public_id: str) -> tuple[int, str] | None:
    """The job's key as `read` would read it, for a caller that keys on its text; None when
    missing, not to be believed (a refused write), or the cache is away."""
    if not current(public_id) or not plausible_id(public_id):
        return None
    try:
        return _load(public_id)
    except Exception:
        return None


# `read` with nothing given: it reads the key itself.
READ = object()


def read(user, public_id: str, stored: tuple[int, str] | None | object = READ) -> Job | None:
    """The user's job as last published, or None (missing, gone, someone else's, expired, or the
    cache away): the caller then reads the database, which also decides what is a 404.

    `stored`: the key as already read (jobs/poll.py reads it with the rest of a poll)."""
    if stored is READ:
        stored = load(public_id)
    # A key written before a write the cache refused may hold an older state; a string that is
    # no id is the database path's to answer (404).
    elif not current(public_id) or not plausible_id(public_id):
        return None
    if stored is None:
        return None
    last_event_id, payload = stored
    data = orjson.loads(payload)  # a third of the stdlib's time: a poll reads the samples too
    if data is None or data.get("owner_id") != getattr(user, "pk", None):
        return None
    if data.keys() != _ATTNAMES:
        return None  # written by a version of the code with other fields: ask the database
    for name in _DATETIMES:
        if data.get(name) is not None:
            data[name] = dt.datetime.fromisoformat(data[name])
    expires_at = data.get("expires_at")
    if expires_at is not None and expires_at <= timezone.now():
        return None
    job = Job(**data)
    job._state.adding = False
    job.last_event_id = last_event_id
    job.from_live_status = True
    return job
