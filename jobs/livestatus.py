"""Each job's live status in the shared cache, so that a status poll needs no database.

The engine publishes a job's row, as it just wrote it, where the row changes: `states.transition`,
the runner's sync points and the controls. The key holds a plain JSON dict (never a pickled
object) of the fields the job object and the job page show, the owner's id, the newest event id
and a version: (the row's `updated_at` in microseconds, that newest event id). A write keeps the
higher version, so a publish that arrives late never replaces a newer one; on Redis the compare
and the write are one Lua script, on the file or per-process cache (one machine, the embedded
default) a read then a write.

Readers (`read`) answer from the key when it is there, belongs to the asking user and the job has
not expired, else they go to the database as before (`None`). Nothing here raises into its
caller: a cache that is away is a miss on read and a skipped write on publish.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from django.core.cache import cache, caches
from django.db import models, transaction
from django.utils import timezone

from .models import Job, JobEvent

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
_ATTNAMES = frozenset(f.attname for f in _FIELDS) | {"last_event_id"}

_CAS = """
local old = redis.call('GET', KEYS[1])
if not old and ARGV[5] == '1' then
  return 0
end
if old then
  local ov, oe = string.match(old, '^(%d+) (%d+) ')
  ov, oe = tonumber(ov), tonumber(oe)
  local nv, ne = tonumber(ARGV[1]), tonumber(ARGV[2])
  if ov and (nv < ov or (nv == ov and ne < oe)) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3], 'EX', ARGV[4])
return 1
"""

# Which public id a job's pk has, for `withdraw` (called when the database is away).
_names: dict[int, str] = {}
# Writes this process could not make (the cache was away), made again before its next cache use:
# a key that missed a control's publish must not keep the state from before it.
_unsent: dict[str, tuple[tuple[int, int], dict[str, Any] | None]] = {}


def cache_key(public_id: str) -> str:
    return f"livestatus:{public_id}"


def _redis():
    """The Redis cache backend when the default cache is one (it runs scripts), else None."""
    from batchhub.cache import RedisCache

    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def snapshot(job: Job, last_event_id: int) -> dict[str, Any]:
    """The job's row as a plain dict of JSON values (timestamps as ISO strings)."""
    data: dict[str, Any] = {}
    for field in _FIELDS:
        value = getattr(job, field.attname)
        if field.attname in _DATETIMES and value is not None:
            value = value.isoformat()
        data[field.attname] = value
    data["last_event_id"] = last_event_id
    return data


def _version(job: Job, last_event_id: int) -> tuple[int, int]:
    stamp = job.updated_at or timezone.now()
    return int(stamp.timestamp() * 1_000_000), int(last_event_id)


def newest_event_id(job_pk: int) -> int:
    return (
        JobEvent.objects.filter(job_id=job_pk).order_by("-id").values_list("id", flat=True).first()
        or 0
    )


def publish(job: Job) -> None:
    """Publish `job` as the caller just saved it, once the transaction commits (at once outside
    one); a rolled-back change is never published. Never raises."""
    try:
        last_event_id = newest_event_id(job.pk)
        data = snapshot(job, last_event_id)
        version = _version(job, last_event_id)
    except Exception:
        # The database failed under the caller: the caller sees it on its own next statement.
        logger.debug("job %s: status not published", job.pk, exc_info=True)
        return
    if len(_names) > 10_000:
        _names.clear()  # a long-lived worker only needs the jobs it is working on
    _names[job.pk] = job.public_id
    transaction.on_commit(lambda: _write(job.public_id, version, data))


def forget(job: Job) -> None:
    """The job is being deleted: its key says so for good (readers go to the database)."""
    transaction.on_commit(lambda: _write(job.public_id, (GONE, 0), None))


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


def _write(public_id: str, version: tuple[int, int], data: dict[str, Any] | None) -> None:
    _unsent.pop(public_id, None)
    if _unsent:
        _flush()
    if not _send(public_id, version, data):
        _unsent[public_id] = (version, data)


def _flush() -> None:
    # Only over a key that is there (the cache kept its data but missed the write): a cache that
    # restarted has no key, and the database answers until the next publish.
    for public_id, (version, data) in list(_unsent.items()):
        if not _send(public_id, version, data, only_over=True):
            return
        _unsent.pop(public_id, None)


def _send(
    public_id: str,
    version: tuple[int, int],
    data: dict[str, Any] | None,
    *,
    only_over: bool = False,
) -> bool:
    try:
        payload = json.dumps(data, separators=(",", ":"))
        redis = _redis()
        if redis is not None:
            redis.run_script(
                _CAS,
                [cache_key(public_id)],
                [version[0], version[1], payload, LIVE_SECONDS, int(only_over)],
            )
            return True
        old = cache.get(cache_key(public_id))
        if (old is None and only_over) or (old is not None and tuple(old[:2]) > version):
            return True
        cache.set(cache_key(public_id), (version[0], version[1], payload), LIVE_SECONDS)
        return True
    except Exception:
        # Publishing never fails a job: the next write, or the database, answers the readers.
        logger.warning("job %s: status not published", public_id, exc_info=True)
        return False


def _load(public_id: str) -> str | None:
    """The stored payload of the job's key (JSON text), or None."""
    redis = _redis()
    if redis is not None:
        client = redis._cache.get_client(write=False)
        raw = client.get(redis.make_and_validate_key(cache_key(public_id)))
        if raw is None:
            return None
        _v, _e, payload = raw.decode().split(" ", 2)
        return payload
    stored = cache.get(cache_key(public_id))
    return None if stored is None else stored[2]


def read(user, public_id: str) -> Job | None:
    """The user's job as last published, or None (missing, gone, someone else's, expired, or the
    cache away): the caller then reads the database, which also decides what is a 404."""
    if _unsent:
        _flush()
    if not public_id.isascii() or not public_id.isprintable() or len(public_id) > 100:
        return None  # not an id: the database path answers it (404)
    try:
        payload = _load(public_id)
    except Exception:
        return None
    if payload is None:
        return None
    data = json.loads(payload)
    if data is None or data.get("owner_id") != getattr(user, "pk", None):
        return None
    if data.keys() != _ATTNAMES:
        return None  # written by a version of the code with other fields: ask the database
    last_event_id = data.pop("last_event_id", 0)
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
