"""An API key check from one cache read: the key's digest → who it is (a small plain dict).

The entry is what the request needs to go on: the owner's id, username and `is_active`, the
key's ids, name and expiry, when it was last stamped as used. Never a pickled user, never a
password hash. It is written after a database check passed, with `add`, so that it cannot replace
the marker `invalidate` leaves: revoking a key, deleting it or deactivating its owner sends the
next request of that key to the database, even when a check that read the database before the
revoke writes its entry after it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache

from .models import APIKey

logger = logging.getLogger(__name__)

# How long an entry (and a marker) lives: the marker must outlive any entry written before it.
# A key in use is checked against the database once per entry, which also stamps its
# last_used_at (services.LAST_USED_RESOLUTION is the same minute).
ENTRY_SECONDS = 60
ASK_DATABASE = "db"


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
        "last_used_at": _iso(key.last_used_at),
    }
    if not owner.is_active or key.revoked_at is not None:
        return
    _quietly(lambda: cache.add(cache_key(key.digest), entry, ENTRY_SECONDS))


def invalidate(digest: str) -> None:
    """The key's next request is checked against the database (revoked, deleted, owner off)."""
    _quietly(lambda: cache.set(cache_key(digest), ASK_DATABASE, ENTRY_SECONDS))


def lookup(digest: str) -> APIKey | None:
    """The key, with its owner, as the entry describes them; None: check the database."""
    try:
        entry = cache.get(cache_key(digest))
    except Exception:
        return None
    if not isinstance(entry, dict) or not entry.get("is_active"):
        return None
    return _key_from(entry, digest)


def _key_from(entry: dict[str, Any], digest: str) -> APIKey:
    # Fields not in the entry are deferred: code that needs one loads it from the database.
    user = _partial(
        get_user_model(),
        {"id": entry["user_id"], "username": entry["username"], "is_active": True},
    )
    key = _partial(
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


def _partial(model, values: dict[str, Any]):
    """An instance as the ORM loads one with `only()`: from_db takes the values in field order."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(None, names, [values[name] for name in names])


def _quietly(write) -> None:
    try:
        write()
    except Exception:
        # The cache away: the next check reads the database, which is always right.
        logger.debug("API key cache write skipped", exc_info=True)


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
