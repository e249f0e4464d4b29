"""The job page's poll reads its session and the job's live status in one Redis trip
(jobs/poll.py `prefetch_page`), and answers exactly as the separate reads did.

These switch the default cache (sessions, user entries, live status) to Redis (the
`redis_default` fixture), so they run wherever `make test` runs: the unit runs otherwise use a
per-process cache, where there are no trips to save.
"""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.cached_db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

from jobs import livestatus, poll, progress_fragment


@pytest.fixture
def page(redis_default, settings, alice, published):
    """alice's browser on her running job's page, its session in the Redis cache; the poll
    answered by the stack (the answer from below it: tests/views/test_fast_page_poll.py)."""
    settings.BATCHHUB_FAST_STATUS = False
    client = Client()
    client.force_login(alice)
    url = reverse("jobs:progress", args=[published.public_id]) + "?seen=processing-0-0"
    return client, url


def _seen(response) -> tuple[int, str | None, str]:
    return response.status_code, response.headers.get("HX-Trigger"), response.content.decode()


def test_the_page_poll_reads_session_and_status_in_one_trip(page, redis_commands):
    client, url = page
    assert client.get(url, HTTP_HX_REQUEST="true").status_code == 200  # the user's entry made
    sent = redis_commands()
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b'id="btn-pause"' in response.content
    # MGET (session + live status), GET (the user's entry, named by the session): two trips.
    assert sent == ["MGET", "GET"]


def test_the_answer_is_the_one_the_separate_reads_give(page, monkeypatch, redis_commands):
    client, url = page
    first = _seen(client.get(url, HTTP_HX_REQUEST="true"))
    progress_fragment.clear()
    monkeypatch.setattr(poll, "prefetch_page", lambda request, public_id: None)
    sent = redis_commands()
    second = _seen(client.get(url, HTTP_HX_REQUEST="true"))
    assert sent == ["GET", "GET", "GET"]  # session, user's entry, live status
    assert first == second
    assert first[0] == 200 and "processing" in first[2].lower()


def test_a_session_signed_out_elsewhere_is_sent_to_sign_in(page, monkeypatch):
    client, url = page
    assert client.get(url, HTTP_HX_REQUEST="true").status_code == 200
    key = client.cookies["sessionid"].value
    SessionStore(key).delete()  # signed out from another browser: gone from cache and database
    assert not Session.objects.filter(session_key=key).exists()
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_another_users_job_is_a_404(redis_default, bob, published):
    client = Client()
    client.force_login(bob)
    url = reverse("jobs:progress", args=[published.public_id])
    assert client.get(url, HTTP_HX_REQUEST="true").status_code == 404


def test_a_cache_that_fails_the_trip_leaves_the_reads_to_each_reader(page, monkeypatch):
    client, url = page
    redis_client = livestatus._redis()._cache.get_client(write=False)

    def broken(*args, **kwargs):
        raise ValueError("a reply it cannot read")

    monkeypatch.setattr(redis_client, "mget", broken)
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b'id="btn-pause"' in response.content
