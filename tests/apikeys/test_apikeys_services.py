from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apikeys import keycache, keyformat, services
from apikeys.models import APIKey


def _updates(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")
    ]


def test_create_key_returns_the_plaintext_and_stores_only_a_digest(alice):
    key, raw = services.create_key(alice, "  nightly import  ")
    key.refresh_from_db()
    assert key.name == "nightly import"
    assert key.public_id.startswith("key_") and len(key.public_id) == 30
    assert raw.startswith(f"bh_{key.lookup_id}_")
    assert key.digest == keyformat.digest(raw)
    assert raw not in key.digest and raw.split("_")[2] not in key.digest
    assert key.prefix == f"bh_{key.lookup_id}_…"
    assert key.status == "active" and key.last_used_at is None and key.revoked_at is None


def test_authenticate_key_loads_key_and_owner(key_a, alice):
    key, raw = key_a
    with CaptureQueriesContext(connection) as ctx:
        found = services.authenticate_key(raw)
    # One SELECT (key + owner), one UPDATE of last_used_at (in a savepoint inside a transaction).
    statements = [q["sql"].split()[0].upper() for q in ctx.captured_queries]
    assert statements.count("SELECT") == 1 and statements.count("UPDATE") == 1
    assert set(statements) <= {"SELECT", "UPDATE", "SAVEPOINT", "RELEASE"}
    assert found == key
    assert found.owner == alice


def test_a_busy_database_skips_the_last_used_stamp_instead_of_failing(key_a, monkeypatch):
    key, raw = key_a
    from django.db.models import QuerySet

    def locked(self, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(QuerySet, "update", locked)
    started = time.monotonic()
    found = services.authenticate_key(raw)
    assert found == key and time.monotonic() - started < 0.5
    monkeypatch.undo()
    key.refresh_from_db()
    assert key.last_used_at is None  # skipped, and tried again on the next request
    assert services.authenticate_key(raw) == key
    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's busy timeout")
def test_the_stamp_does_not_wait_for_the_lock_and_the_timeout_is_restored(key_a):
    from batchhub import dbbusy

    key, _raw = key_a
    seen = []

    def write():
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            seen.append(cursor.fetchone()[0])

    assert dbbusy.try_write(write)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        after = cursor.fetchone()[0]
    assert seen == [0]
    assert after == int(connection.settings_dict["OPTIONS"]["timeout"] * 1000)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # wrong checksum
        lambda raw: raw[:20] + "!" + raw[21:],  # malformed
        lambda raw: raw.lower(),  # case matters
        lambda raw: "",
    ],
)
def test_bad_format_or_checksum_is_rejected_without_a_query(
    key_a, mangle, django_assert_num_queries
):
    _, raw = key_a
    with django_assert_num_queries(0):
        assert services.authenticate_key(mangle(raw)) is None


def test_wrong_secret_with_the_right_lookup_id_is_rejected(key_a):
    key, raw = key_a
    forged = keyformat.build(key.lookup_id)  # valid format and checksum, other secret
    assert keyformat.parse(forged) is not None
    assert services.authenticate_key(forged) is None
    assert services.authenticate_key(raw) == key


def test_unknown_lookup_id_is_rejected(db):
    assert services.authenticate_key(keyformat.build(keyformat.new_lookup_id())) is None


def test_expired_key_is_rejected(alice):
    key, raw = services.create_key(alice, "short", timezone.now() + timedelta(seconds=30))
    assert services.authenticate_key(raw) == key
    # Saved through the model (as the admin does), which drops the key's cached entry.
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    check = services.check_key(raw)
    assert check.key is None and check.reason == "This API key has expired."


def test_revoked_key_is_rejected_at_once(key_a, alice):
    key, raw = key_a
    assert services.authenticate_key(raw) == key
    revoked = services.revoke_key(alice, key.public_id)
    assert revoked.revoked_at is not None and revoked.status == "revoked"
    check = services.check_key(raw)
    assert check.key is None and check.reason == "This API key has been revoked."


def test_revoking_twice_keeps_the_first_time(key_a, alice):
    key, _ = key_a
    first = services.revoke_key(alice, key.public_id).revoked_at
    assert services.revoke_key(alice, key.public_id).revoked_at == first


def test_another_users_key_is_not_found(key_a, bob):
    key, raw = key_a
    with pytest.raises(Http404):
        services.revoke_key(bob, key.public_id)
    with pytest.raises(Http404):
        services.get_key(bob, key.public_id)
    assert list(services.list_keys(bob)) == []
    assert services.authenticate_key(raw) == key  # untouched


def test_list_keys_is_newest_first_and_only_the_users(alice, bob):
    older, _ = services.create_key(alice, "older")
    newer, _ = services.create_key(alice, "newer")
    services.create_key(bob, "bobs")
    assert list(services.list_keys(alice)) == [newer, older]


def test_last_used_at_is_written_at_most_once_a_minute(key_a):
    key, raw = key_a
    with CaptureQueriesContext(connection) as ctx:
        services.authenticate_key(raw)
        services.authenticate_key(raw)
    assert len(_updates(ctx)) == 1
    key.refresh_from_db()
    first_use = key.last_used_at
    assert first_use is not None and timezone.now() - first_use < timedelta(seconds=5)

    # Over a minute later, one more write.
    APIKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(seconds=61))
    cache.delete(keycache.cache_key(key.digest))  # the cached entry lives a minute too
    with CaptureQueriesContext(connection) as ctx:
        services.authenticate_key(raw)
        services.authenticate_key(raw)
    assert len(_updates(ctx)) == 1
    key.refresh_from_db()
    assert key.last_used_at > first_use - timedelta(seconds=1)


def test_the_last_used_update_is_conditional_so_concurrent_writers_write_once(key_a):
    key, raw = key_a
    # Two processes loaded the key while last_used_at was still empty; both decide to write.
    first = APIKey.objects.get(pk=key.pk)
    second = APIKey.objects.get(pk=key.pk)
    assert first.last_used_at is None and second.last_used_at is None
    now = timezone.now()
    services._touch(first, now)
    with CaptureQueriesContext(connection) as ctx:
        services._touch(second, now + timedelta(seconds=1))
    assert len(_updates(ctx)) == 1  # it tried, and its WHERE matched no row
    key.refresh_from_db()
    assert key.last_used_at == now


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_bad_names_are_refused(alice, name):
    with pytest.raises(ValidationError):
        services.create_key(alice, name)
    assert not APIKey.objects.exists()


def test_expiry_in_the_past_is_refused(alice):
    with pytest.raises(ValidationError):
        services.create_key(alice, "x", timezone.now() - timedelta(minutes=1))


def test_a_lookup_id_collision_draws_again(alice, key_a, monkeypatch):
    taken = key_a[0].lookup_id
    ids = iter([taken, "Fresh123"])
    monkeypatch.setattr(keyformat, "new_lookup_id", lambda: next(ids))
    key, raw = services.create_key(alice, "second")
    assert key.lookup_id == "Fresh123"
    assert services.authenticate_key(raw) == key


def test_keys_survive_a_secret_key_rotation_through_fallbacks(alice, settings):
    settings.SECRET_KEY = "old-secret-key"
    key, raw = services.create_key(alice, "rotated")
    settings.SECRET_KEY = "new-secret-key"
    settings.SECRET_KEY_FALLBACKS = []
    assert services.authenticate_key(raw) is None
    settings.SECRET_KEY_FALLBACKS = ["old-secret-key"]
    assert services.authenticate_key(raw) == key
    key.refresh_from_db()
    assert key.digest == keyformat.digest(raw)  # re-digested under the new key
    settings.SECRET_KEY_FALLBACKS = []
    assert services.authenticate_key(raw) == key


def test_the_polls_key_check_accepts_what_the_full_check_accepts(key_a, alice):
    # jobs/fast_status.py checks a poll's key from the entry alone (no key or user built): it
    # must refuse whatever known_key refuses, and see a revoke at once.
    key, raw = key_a
    assert services.authenticate_key(raw) == key  # the database check leaves the entry
    entry = keycache.read_text(key.digest)
    lookup_id = keyformat.parse(raw).lookup_id
    assert services.known_key(raw, entry) == key
    assert services.known_owner_id(lookup_id, entry) == alice.pk
    assert services.known_owner_id("Zz9Zz9Zz", entry) is None  # another key's lookup id
    assert services.known_owner_id(lookup_id, None) is None
    assert services.known_owner_id(lookup_id, "not json") is None
    services.revoke_key(alice, key.public_id)
    marker = keycache.read_text(key.digest)
    assert services.known_key(raw, marker) is None
    assert services.known_owner_id(lookup_id, marker) is None


def test_the_polls_key_check_refuses_an_expired_or_inactive_entry(key_a, alice):
    import json

    key, raw = key_a
    assert services.authenticate_key(raw) == key
    entry = json.loads(keycache.read_text(key.digest))
    lookup_id = keyformat.parse(raw).lookup_id
    past = (timezone.now() - timedelta(seconds=1)).isoformat()
    expired = json.dumps({**entry, "expires_at": past})
    assert services.known_key(raw, expired) is None
    assert services.known_owner_id(lookup_id, expired) is None
    inactive = json.dumps({**entry, "is_active": False})
    assert services.known_key(raw, inactive) is None
    assert services.known_owner_id(lookup_id, inactive) is None
