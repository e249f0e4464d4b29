"""An API key check from one cache read: the key's digest → who it is (a small plain dict).

The entry is what the request needs to go on: the owner's id, username and `is_active`, the
key's ids, name and expiry, when it was last stamped as used. Never a pickled user, never a
password hash. It is written after a database check passed, with `add`, so that it cannot replace
the marker `invalidate` leaves: revoking a key, deleting it or deactivating its owner sends the
next request of that key to the database, even when a check that read the database before the
revoke writes its entry after it.

The entry is JSON text, stored as it is on Redis (not pickled by Django), so that a Lua script can
read it: jobs/poll.py reads it, the job's live status and counts the rate limit in one round trip.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache, caches
from django.utils import timezone

from batchhub.cache import instance_from_entry, write_quietly

from .models import APIKey

logger = logging.getLogger(__name__)

# How long an entry (and a marker) lives: the marker must outlive any entry written before it.
# A key in use is checked against the database once per entry, which also stamps its
# last_used_at (services.LAST_USED_RESOLUTION is the same minute).
ENTRY_SECONDS = 60
ASK_DATABASE = "db"
# `lookup` with no text given: read the entry from the cache.
READ = object()


def cache_key(digest: str) -> str:
    return f"apikey:{digest}"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value is not None else None


def remember(key: APIKey) -> None:
    """After a database check passed (owner loaded, active): the entry for the next requests."""
    owner = key.owner
    entry = {
        "user_id": owner.pk,
        "username": owner.get_username(),
        "is_active": owner.is_active,
        "key_id": key.pk,
        "public_id": key.public_id,
        "name": key.name,
        "lookup_id": key.lookup_id,
        "expires_at": _iso(key.expires_at),
        # The same instant in seconds, for the poll's Lua script (it counts only a usable key).
        "expires_ts": key.expires_at.timestamp() if key.expires_at is not None else None,
        "last_used_at": _iso(key.last_used_at),
    }
    if not owner.is_active or key.revoked_at is not None:
        return
    write_quietly(lambda: _store(digest=key.digest, text=_dumps(entry), only_new=True))


def invalidate(digest: str) -> None:
    """The key's next request is checked against the database (revoked, deleted, owner off)."""
    write_quietly(lambda: _store(digest=digest, text=ASK_DATABASE, only_new=False))


def lookup(digest: str, text: str | None | object = READ) -> APIKey | None:
    """The key, with its owner, as the entry describes them; None: check the database.

    `text`: the entry as already read (jobs/poll.py reads it with the rest of a poll)."""
    try:
        entry = parse(read_text(digest) if text is READ else text)
    except Exception:
        return None
    if entry is None:
        return None
    return _key_from(entry, digest)


def usable_owner_id(text: str | None, lookup_id: str) -> int | None:
    """The owner's id when the entry `text` vouches for a usable key with this lookup id (what
    `lookup` and the key check accept: active owner, not expired), else None; builds no model."""
    try:
        entry = parse(text)
        if entry is None or entry["lookup_id"] != lookup_id:
            return None
        expires_at = _when(entry["expires_at"])
        if expires_at is not None and expires_at <= timezone.now():
            return None
        return int(entry["user_id"])
    except Exception:
        return None


def parse(text: str | None) -> dict[str, Any] | None:
    """The entry stored as `text`, or None when it is missing, a marker or not an entry."""
    if not text or text == ASK_DATABASE:
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        return None  # written by another version of the code: the database decides
    if not isinstance(entry, dict) or entry.get("is_active") is not True:
        return None
    return entry


def read_text(digest: str) -> str | None:
    """The stored entry (JSON text or the marker), or None."""
    redis = _redis()
    if redis is None:
        value = cache.get(cache_key(digest))
        return value if isinstance(value, str) else None
    raw = redis._cache.get_client(write=False).get(redis.make_and_validate_key(cache_key(digest)))
    return None if raw is None else raw.decode("utf-8", "replace")


def _store(*, digest: str, text: str, only_new: bool) -> None:
    redis = _redis()
    if redis is None:
        write = cache.add if only_new else cache.set
        write(cache_key(digest), text, ENTRY_SECONDS)
        return
    client = redis._cache.get_client(write=True)
    client.set(redis.make_and_validate_key(cache_key(digest)), text, nx=only_new, ex=ENTRY_SECONDS)


def _redis():
    """The Redis cache backend when the default cache is one (its values stored raw), else None."""
    from batchhub.cache import RedisCache

    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def _dumps(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"))


def _key_from(entry: dict[str, Any], digest: str) -> APIKey:
    # Fields not in the entry are deferred: code that needs one loads it from the database.
    user = instance_from_entry(
        get_user_model(),
        {"id": entry["user_id"], "username": entry["username"], "is_active": True},
    )
    key = instance_from_entry(
        APIKey,
        {
            "id": entry["key_id"],
            "public_id": entry["public_id"],
            "owner_id": entry["user_id"],
            "name": entry["name"],
            "lookup_id": entry["lookup_id"],
            "digest": digest,
            "expires_at": _when(entry["expires_at"]),
            "last_used_at": _when(entry["last_used_at"]),
            "revoked_at": None,
        },
    )
    key.owner = user
    return key


def _on_key_changed(sender, instance: APIKey, created: bool = False, **kwargs: Any) -> None:
    if not created:  # a new key has no entry yet
        invalidate(instance.digest)


def _on_user_saved(sender, instance, **kwargs: Any) -> None:
    # Deactivating a user (the admin, a script) stops their keys at the next request.
    if not instance.is_active:
        for digest in APIKey.objects.filter(owner_id=instance.pk).values_list("digest", flat=True):
            invalidate(digest)


def connect_signals() -> None:
    from django.db.models.signals import post_delete, post_save

    post_save.connect(_on_key_changed, sender=APIKey, dispatch_uid="keycache-key-saved")
    post_delete.connect(_on_key_changed, sender=APIKey, dispatch_uid="keycache-key-deleted")
    post_save.connect(_on_user_saved, sender=get_user_model(), dispatch_uid="keycache-user")
