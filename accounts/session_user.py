"""The signed-in user of a browser session from one cache read instead of a query per request.

Django's AuthenticationMiddleware loads the session's user from the database on every request
that looks at it, only to check that the user is still active and that the session's hash still
matches their password. The job page polls its live part every second, so that query is a good
share of what a poll costs (docs/performance.md). This middleware keeps, per user, a small plain
entry (id, username, the staff flags and the session hash the password gives) in the shared
cache, and answers from it when the session's hash matches the entry's; anything else (no entry,
a marker, another hash) goes to Django's own check, which then writes the entry.

The entry never holds the password hash; the session hash it holds is the one every session of
that user already stores (sessions live in the same cache). Like the API key entries
(apikeys/keycache.py) it is written with `add` after a database check, and saving or deleting
the user leaves a marker that sends their next request to the database: a password change, a
deactivation or a deletion takes effect at once (an UPDATE that bypasses the model's save has
up to ENTRY_SECONDS).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.middleware import AuthenticationMiddleware, auser
from django.core.cache import cache
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject

from batchhub.cache import instance_from_entry, write_quietly

logger = logging.getLogger(__name__)

ENTRY_SECONDS = 60
ASK_DATABASE = "db"
_FIELDS = ("username", "is_active", "is_staff", "is_superuser")


def cache_key(user_id: Any) -> str:
    return f"sessionuser:{user_id}"


class SessionUserMiddleware(AuthenticationMiddleware):
    """AuthenticationMiddleware, with the user read from the cache entry when it vouches."""

    def process_request(self, request) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: session_user(request))
        request.auser = partial(auser, request)


def session_user(request):
    if not hasattr(request, "_cached_user"):
        request._cached_user = _from_entry(request) or _from_database(request)
    return request._cached_user


def _from_entry(request):
    signed_in = session_sign_in(request.session)
    if signed_in is None:
        return None
    user_id, session_hash = signed_in
    try:
        entry = read_entry(request, user_id)
    except Exception:
        return None
    if not vouches(entry, user_id, session_hash):
        return None
    values = {"id": entry["id"], **{name: entry[name] for name in _FIELDS}}
    return instance_from_entry(get_user_model(), values)


def read_entry(request, user_id: Any) -> Any:
    """The user's entry, read once a request: kept on it for the next reader."""
    read = getattr(request, "_session_user_entry", None)
    if read is None or read[0] != user_id:
        read = request._session_user_entry = (user_id, cache.get(cache_key(user_id)))
    return read[1]


def hand_over_entry(request, user_id: Any, entry: Any) -> None:
    """Leave the user's entry, read with other keys in one trip, for `read_entry`."""
    request._session_user_entry = (user_id, entry)


def session_sign_in(session) -> tuple[Any, str] | None:
    """The (user id, session hash) a session's data holds, when a backend in use signed it in."""
    try:
        user_id = session[auth.SESSION_KEY]
        backend = session[auth.BACKEND_SESSION_KEY]
        session_hash = session[auth.HASH_SESSION_KEY]
    except KeyError:
        return None
    if backend not in settings.AUTHENTICATION_BACKENDS or not session_hash:
        return None
    return user_id, session_hash


def vouches(entry: Any, user_id: Any, session_hash: str) -> bool:
    """Whether the user's entry answers for the sign-in without Django's check: an active user,
    this user, and the session hash their password gives now (else Django's check decides: a
    rotated secret, a changed password)."""
    if not isinstance(entry, dict) or not entry.get("is_active"):
        return False
    entry_hash = entry.get("session_hash")
    return (
        str(entry.get("id")) == str(user_id)
        and isinstance(entry_hash, str)
        and constant_time_compare(session_hash, entry_hash)
    )


def _from_database(request):
    user = auth.get_user(request)
    if user.is_authenticated and user.is_active:
        entry = {
            "id": user.pk,
            **{name: getattr(user, name) for name in _FIELDS},
            "session_hash": user.get_session_auth_hash(),
        }
        write_quietly(lambda: cache.add(cache_key(user.pk), entry, ENTRY_SECONDS))
    return user


def _on_user_changed(
    sender, instance, created: bool = False, update_fields=None, **kwargs: Any
) -> None:
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return  # a new user has no entry; every login stamps last_login, which it does not hold
    write_quietly(lambda: cache.set(cache_key(instance.pk), ASK_DATABASE, ENTRY_SECONDS))


def connect_signals() -> None:
    from django.db.models.signals import post_delete, post_save

    user_model = get_user_model()
    post_save.connect(_on_user_changed, sender=user_model, dispatch_uid="sessionuser-saved")
    post_delete.connect(_on_user_changed, sender=user_model, dispatch_uid="sessionuser-deleted")
