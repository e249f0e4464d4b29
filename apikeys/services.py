"""What the page, the API and the authentication class call to create, list, revoke and check keys.

The key format and the digest are described in keyformat.py. The plaintext key exists only in the
return value of `create_key`; nothing here logs it or stores it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from batchhub import dbbusy

from . import keycache, keyformat
from .lookup import key_with_owner
from .models import APIKey

NAME_MAX_LENGTH = 100
# last_used_at is a hint for people ("is this key still in use?"), not an audit log: one write a
# minute per key keeps a busy script from turning every request into a database write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A name is required."})
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError({"name": f"At most {NAME_MAX_LENGTH} characters."})
    return name


def validate_expires_at(expires_at: datetime | None) -> datetime | None:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    return expires_at


def create_key(user, name: str, expires_at: datetime | None = None) -> tuple[APIKey, str]:
    """A new key for `user` and its plaintext; the plaintext cannot be recovered afterwards."""
    name = validate_name(name)
    expires_at = validate_expires_at(expires_at)
    for _attempt in range(5):
        lookup_id = keyformat.new_lookup_id()
        raw = keyformat.build(lookup_id)
        try:
            # The savepoint keeps a caller's transaction usable after a lookup id collision.
            with transaction.atomic():
                key = APIKey.objects.create(
                    owner=user,
                    name=name,
                    lookup_id=lookup_id,
                    digest=keyformat.digest(raw),
                    expires_at=expires_at,
                )
        except IntegrityError:
            # 62**8 lookup ids: a collision is rare but possible; draw again.
            if APIKey.objects.filter(lookup_id=lookup_id).exists():
                continue
            raise
        return key, raw
    raise RuntimeError("Could not draw a free API key lookup id.")


def list_keys(user):
    return APIKey.objects.filter(owner=user).order_by("-created_at", "-id")


def get_key(user, public_id: str) -> APIKey:
    """The user's key; another user's key is indistinguishable from a missing one (404)."""
    key = APIKey.objects.filter(owner=user, public_id=public_id).first()
    if key is None:
        raise Http404("No such API key.")
    return key


def revoke_key(user, public_id: str) -> APIKey:
    """Revoke the user's key: it fails from the next request on. Revoking twice keeps the first."""
    key = get_key(user, public_id)
    if key.revoked_at is None:
        now = timezone.now()
        # Conditional UPDATE: two concurrent revokes keep one revoked_at.
        APIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
        key.refresh_from_db(fields=["revoked_at"])
    keycache.invalidate(key.digest)
    return key


@dataclass(frozen=True, slots=True)
class KeyCheck:
    key: APIKey | None
    reason: str  # for the 401 message; says "revoked"/"expired" only to someone holding the secret


INVALID = "Invalid API key."


def _digest_matches(key: APIKey, raw: str) -> bool:
    if hmac.compare_digest(key.digest, keyformat.digest(raw)):
        return True
    # SECRET_KEY was rotated: accept a digest made under a fallback and re-digest under the new
    # key, so keys keep working through a rotation and stop depending on the old secret.
    for old_secret in getattr(settings, "SECRET_KEY_FALLBACKS", ()):
        if hmac.compare_digest(key.digest, keyformat.digest(raw, secret=old_secret)):
            key.digest = keyformat.digest(raw)
            APIKey.objects.filter(pk=key.pk).update(digest=key.digest)
            return True
    return False


def check_key(raw: str, entry: str | None | object = keycache.READ) -> KeyCheck:
    """Verify a presented key: format and checksum first (no I/O), then one indexed query.

    `entry`: the key cache's entry for it as already read (jobs/poll.py)."""
    parsed = keyformat.parse(raw)
    if parsed is None:
        return KeyCheck(None, INVALID)
    presented = keyformat.digest(parsed.raw)
    cached = keycache.lookup(presented, entry)
    if cached is not None and cached.lookup_id == parsed.lookup_id:
        # A database check of this very key passed within the entry's life (apikeys/keycache.py).
        if cached.is_expired():
            return KeyCheck(None, "This API key has expired.")
        return KeyCheck(cached, "")
    key = key_with_owner(parsed.lookup_id)
    if key is None or not _digest_matches(key, parsed.raw):
        return KeyCheck(None, INVALID)
    now = timezone.now()
    if key.revoked_at is not None:
        return KeyCheck(None, "This API key has been revoked.")
    if key.is_expired(now):
        return KeyCheck(None, "This API key has expired.")
    if _touch(key, now) and key.owner.is_active:
        # Not when the stamp was skipped: the next request tries it again from the database.
        keycache.remember(key)
    return KeyCheck(key, "")


def known_key(raw: str, entry: str | None | object = keycache.READ) -> APIKey | None:
    """The usable key matching `raw` when the key cache vouches for it (no database), else None:
    `check_key` then decides, from the database (a revoked key's marker sends it there).

    `entry`: the key cache's entry for it as already read (jobs/poll.py)."""
    parsed = keyformat.parse(raw)
    if parsed is None:
        return None
    cached = keycache.lookup(keyformat.digest(parsed.raw), entry)
    if cached is None or cached.lookup_id != parsed.lookup_id or cached.is_expired():
        return None
    return cached


def known_owner_id(lookup_id: str, entry: str | None) -> int | None:
    """`known_key` for a key already parsed and digested, its entry already read (jobs/poll.py
    does all three for a poll): the owner's id when the entry vouches for the key, else None.
    The same checks, without building the key and its owner on every poll."""
    return keycache.usable_owner_id(entry, lookup_id)


def authenticate_key(raw: str) -> APIKey | None:
    """The usable key matching `raw` (its owner is loaded), or None."""
    return check_key(raw).key


def _touch(key: APIKey, now: datetime) -> bool:
    """Stamp last_used_at if it is over a minute old; False if that write was skipped."""
    threshold = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at >= threshold:
        return True  # fresh enough as loaded: no query at all
    # The WHERE makes concurrent processes that all loaded a stale value write once between them.
    # Best effort: on a busy database (a worker holding SQLite's write lock) the stamp is skipped
    # rather than making a read wait for the lock or fail.
    written = dbbusy.try_write(
        lambda: APIKey.objects.filter(pk=key.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=threshold))
        .update(last_used_at=now)
    )
    if written:
        key.last_used_at = now
    return bool(written)
