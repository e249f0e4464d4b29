"""The hand-compiled hot-path query returns exactly what the ORM returns."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from apikeys import lookup, services
from apikeys.models import APIKey


def _fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_key_with_owner_matches_the_orm(alice, django_assert_num_queries):
    key, raw = services.create_key(alice, "full", timezone.now() + timedelta(days=3))
    services.authenticate_key(raw)
    APIKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    alice.last_login = timezone.now()
    alice.save()

    expected = APIKey.objects.select_related("owner").get(pk=key.pk)
    with django_assert_num_queries(1):
        found = lookup.key_with_owner(key.lookup_id)
        owner = found.owner  # loaded by the same query
    assert _fields(found) == _fields(expected)
    assert _fields(owner) == _fields(expected.owner)
    for value in (
        found.created_at,
        found.expires_at,
        found.last_used_at,
        found.revoked_at,
        owner.last_login,
    ):
        assert value.tzinfo is not None
    assert found._state.adding is False and found._state.db == "default"


def test_unknown_lookup_id_is_none(db):
    assert lookup.key_with_owner("NoSuchId") is None


def test_lookup_is_case_sensitive(key_a):
    key, _ = key_a
    assert lookup.key_with_owner(key.lookup_id) == key
    swapped = key.lookup_id.swapcase()
    if swapped != key.lookup_id:
        assert lookup.key_with_owner(swapped) is None
