"""The session's user from a cache entry (accounts/session_user.py): no query for it once the
entry is there, and a password change, a deactivation or a deletion still ends the session at
once."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import session_user

PAGE = "/"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def _user_queries(client) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(PAGE)
    return response.status_code, [q["sql"] for q in queries if "auth_user" in q["sql"]]


def test_a_signed_in_page_loads_its_user_once_then_from_the_entry(alice, client_alice):
    status, first = _user_queries(client_alice)
    assert status == 200 and len(first) == 1
    status, then = _user_queries(client_alice)
    assert status == 200 and then == []
    entry = cache.get(session_user.cache_key(alice.pk))
    assert entry["username"] == "alice" and entry["is_active"] is True
    assert alice.password not in repr(entry) and "password" not in entry


def test_the_page_shows_the_same_user_from_the_entry(alice, client_alice):
    first = client_alice.get(PAGE)
    again = client_alice.get(PAGE)
    assert again.status_code == 200
    assert again.context["user"].pk == alice.pk
    assert again.context["user"].get_username() == "alice"
    assert b"alice" in first.content and b"alice" in again.content


def test_a_password_change_ends_other_sessions_at_once(alice, client_alice):
    assert client_alice.get(PAGE).status_code == 200
    assert client_alice.get(PAGE).status_code == 200  # from the entry
    alice.set_password("a new one, long enough")
    alice.save()
    response = client_alice.get(PAGE)
    assert response.status_code == 302 and "/login" in response["Location"]


def test_a_deactivated_user_is_signed_out_at_once(alice, client_alice):
    assert client_alice.get(PAGE).status_code == 200
    assert client_alice.get(PAGE).status_code == 200
    alice.is_active = False
    alice.save()
    assert client_alice.get(PAGE).status_code == 302


def test_a_deleted_user_is_signed_out_at_once(alice, client_alice):
    assert client_alice.get(PAGE).status_code == 200
    assert client_alice.get(PAGE).status_code == 200
    alice.delete()
    assert client_alice.get(PAGE).status_code == 302


def test_a_check_that_read_the_database_before_a_change_cannot_bring_the_entry_back(
    alice, client_alice
):
    assert client_alice.get(PAGE).status_code == 200
    stale = cache.get(session_user.cache_key(alice.pk))
    alice.set_password("a new one, long enough")
    alice.save()
    cache.add(session_user.cache_key(alice.pk), stale, session_user.ENTRY_SECONDS)
    assert client_alice.get(PAGE).status_code == 302
