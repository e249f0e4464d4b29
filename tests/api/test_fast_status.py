"""The API status poll answered below Django's stack (jobs/fast_status.py): the same bytes and
headers as DRF's answer, and every case it must not answer left to the stack unchanged.

Each test makes the same request with BATCHHUB_FAST_STATUS on and off and compares status,
headers (names, values and order) and body; a spy says which path answered. Each runs twice: on
the per-process cache and on Redis.
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apikeys import keyformat
from apikeys import services as key_services
from batchhub import sliding_window
from batchhub.api import GroupRateThrottle
from jobs import links, livestatus

API = "/api/v1"


@pytest.fixture(autouse=True, params=["per-process", "redis"])
def cache_kind(request):
    """Every test on the per-process cache of the unit runs and on Redis, as deployments run
    it: there the key's entry, the status and the rate limit are read by one Lua script."""
    if request.param == "redis":
        request.getfixturevalue("redis_default")
    return request.param


@pytest.fixture(autouse=True)
def _clean(monkeypatch, cache_kind, live_status_cache):
    # A signed results link carries its expiry (whole seconds): one clock for both answers.
    monkeypatch.setattr(links, "_expiry", lambda seconds: 2_000_000_000 + seconds)


@pytest.fixture
def published(alice, published):
    """The shared published job, its live status readable as the fast path reads it."""
    assert livestatus.read(alice, published.public_id) is not None
    return published


def _seen(response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, list(response.headers.items()), response.content


def _both(client, settings, path: str, **extra):
    """The answer with the fast path on, then off, for the same request."""
    settings.BATCHHUB_FAST_STATUS = True
    on = client.get(path, **extra)
    settings.BATCHHUB_FAST_STATUS = False
    off = client.get(path, **extra)
    settings.BATCHHUB_FAST_STATUS = True
    return _seen(on), _seen(off)


def _warm(client, job) -> None:
    # The first request checks the key in the database and leaves its entry in the cache.
    assert client.get(f"{API}/jobs/{job.public_id}").status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"HTTP_ACCEPT": "application/json"},
        {"HTTP_ACCEPT": "*/*"},
    ],
    ids=["no-accept", "accept-json", "accept-any"],
)
def test_the_fast_answer_is_drfs_byte_for_byte(api_alice, published, settings, fast_answers, extra):
    _warm(api_alice, published)
    fast_answers.clear()
    on, off = _both(api_alice, settings, f"{API}/jobs/{published.public_id}", **extra)
    assert fast_answers == [published.public_id]  # on: fast; off: the stack
    assert on == off
    status, headers, body = on
    assert status == 200
    names = [name for name, _value in headers]
    for name in ("Content-Type", "Allow", "X-Frame-Options", "Content-Length"):
        assert name in names
    assert "Content-Security-Policy" in names and "X-Content-Type-Options" in names
    assert b'"status":"processing"' in body


def test_a_bearer_key_is_answered_the_same(alice, published, settings, fast_answers):
    from rest_framework.test import APIClient

    from tests.factories import APIKeyFactory

    raw = APIKeyFactory(owner=alice, name="bearer").raw
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    _warm(client, published)
    fast_answers.clear()
    on, off = _both(client, settings, f"{API}/jobs/{published.public_id}")
    assert fast_answers == [published.public_id]
    assert on == off and on[0] == 200


def test_two_different_keys_are_refused_on_both_paths(
    api_alice, alice, published, settings, fast_answers
):
    from tests.factories import APIKeyFactory

    _warm(api_alice, published)  # both keys' entries in the cache: the fast path could answer
    other = APIKeyFactory(owner=alice, name="other").raw
    fast_answers.clear()
    on, off = _both(
        api_alice,
        settings,
        f"{API}/jobs/{published.public_id}",
        HTTP_AUTHORIZATION=f"Bearer {other}",
    )
    assert fast_answers == []
    assert on == off and on[0] == 401
    assert b"Two different API keys" in on[2]


def test_the_fast_answer_follows_a_change_of_the_header_settings(
    api_alice, published, settings, fast_answers
):
    # The headers the skipped middlewares add are learnt once per process, and again when a
    # setting changes: a new policy or frame option shows in the very next fast answer.
    path = f"{API}/jobs/{published.public_id}"
    _warm(api_alice, published)
    first = api_alice.get(path)
    settings.SECURE_CSP = {"default-src": ["'none'"], "img-src": ["https://example.com"]}
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    fast_answers.clear()
    on, off = _both(api_alice, settings, path)
    assert fast_answers == [published.public_id]
    assert on == off
    headers = dict(on[1])
    assert headers["Content-Security-Policy"] == "default-src 'none'; img-src https://example.com"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert first.headers["Content-Security-Policy"] != headers["Content-Security-Policy"]
    assert headers["Content-Length"] == str(len(on[2]))


def test_the_fast_answer_runs_no_query(api_alice, published, fast_answers):
    _warm(api_alice, published)
    with CaptureQueriesContext(connection) as queries:
        response = api_alice.get(f"{API}/jobs/{published.public_id}")
    assert response.status_code == 200 and fast_answers
    assert queries.captured_queries == []


def test_a_missing_live_status_key_goes_to_the_stack(api_alice, published, settings, fast_answers):
    _warm(api_alice, published)
    fast_answers.clear()
    cache.delete(livestatus.cache_key(published.public_id))
    on, off = _both(api_alice, settings, f"{API}/jobs/{published.public_id}")
    assert fast_answers == []
    assert on == off and on[0] == 200
    assert b'"total":30' in on[2]


def test_another_users_job_is_the_stacks_404(api_alice, api_bob, published, settings, fast_answers):
    _warm(api_alice, published)
    assert api_bob.get(f"{API}/jobs").status_code == 200  # bob's key entry is cached too
    fast_answers.clear()
    on, off = _both(api_bob, settings, f"{API}/jobs/{published.public_id}")
    assert fast_answers == []
    assert on == off and on[0] == 404
    assert b'"code":"not_found"' in on[2]


def test_a_revoked_key_is_a_401_at_once(alice, api_alice, published, settings, fast_answers):
    _warm(api_alice, published)
    assert api_alice.get(f"{API}/jobs/{published.public_id}").status_code == 200
    assert fast_answers  # the key was being answered from the cache
    key = alice.api_keys.get(digest=keyformat.digest(api_alice.raw_key))
    key_services.revoke_key(alice, key.public_id)
    fast_answers.clear()
    on, off = _both(api_alice, settings, f"{API}/jobs/{published.public_id}")
    assert fast_answers == []
    assert on == off and on[0] == 401
    assert b"revoked" in on[2]


def test_a_key_past_its_expiry_is_the_stacks_401(api_alice, published, settings, fast_answers):
    from apikeys import keycache

    _warm(api_alice, published)
    digest = keyformat.digest(api_alice.raw_key)
    entry = json.loads(keycache.read_text(digest))
    entry.update(expires_at="2020-01-01T00:00:00+00:00", expires_ts=1577836800.0)
    cache.delete(keycache.cache_key(digest))
    keycache._store(digest=digest, text=json.dumps(entry), only_new=True)
    fast_answers.clear()
    on, off = _both(api_alice, settings, f"{API}/jobs/{published.public_id}")
    assert fast_answers == []
    assert on == off and on[0] == 401
    assert b"expired" in on[2]


def test_a_deactivated_owner_is_a_401_at_once(alice, api_alice, published, fast_answers):
    _warm(api_alice, published)
    alice.is_active = False
    alice.save()
    fast_answers.clear()
    assert api_alice.get(f"{API}/jobs/{published.public_id}").status_code == 401
    assert fast_answers == []


def test_the_rate_limit_counts_fast_answers_and_throttles_as_drf(
    api_alice, published, settings, fast_answers, monkeypatch
):
    monkeypatch.setattr(
        GroupRateThrottle, "THROTTLE_RATES", {**GroupRateThrottle.THROTTLE_RATES, "read": "3/min"}
    )
    monkeypatch.setattr(GroupRateThrottle, "timer", lambda self: 1020.0)
    path = f"{API}/jobs/{published.public_id}"
    _warm(api_alice, published)  # 1: the stack
    fast_answers.clear()
    assert api_alice.get(path).status_code == 200  # 2: fast
    assert api_alice.get(path).status_code == 200  # 3: fast
    assert len(fast_answers) == 2
    on, off = _both(api_alice, settings, path)  # 4 and 5: over the rate
    assert len(fast_answers) == 2
    assert on == off and on[0] == 429
    assert b'"code":"rate_limited"' in on[2]
    assert int(dict(on[1])["Retry-After"]) >= 1


def test_a_cache_that_is_down_leaves_the_poll_to_the_stack(
    api_alice, published, settings, fast_answers, monkeypatch
):
    _warm(api_alice, published)
    fast_answers.clear()

    def away(*args, **kwargs):
        raise ConnectionError("cache away")

    backend = caches["default"]  # the object itself: the proxy's attributes outlive a switch
    for name in ("get", "set", "add", "delete"):
        monkeypatch.setattr(backend, name, away)
    monkeypatch.setattr(livestatus, "_redis", away)
    # What the rate limit does on Redis while it is away: it admits (batchhub/sliding_window).
    monkeypatch.setattr(sliding_window, "hit", lambda *a: sliding_window.Outcome(True, 0, 0))
    on, off = _both(api_alice, settings, f"{API}/jobs/{published.public_id}")
    assert fast_answers == []
    assert on == off and on[0] == 200
    assert b'"total":30' in on[2]


@pytest.mark.parametrize(
    "variant",
    ["include", "other-query", "accept-indent", "head", "slash", "session"],
)
def test_other_requests_go_to_the_stack_unchanged(
    api_alice, client_alice, published, settings, fast_answers, variant
):
    _warm(api_alice, published)
    fast_answers.clear()
    path = f"{API}/jobs/{published.public_id}"
    client, extra, method = api_alice, {}, "get"
    if variant == "include":
        path += "?include=results"
    elif variant == "other-query":
        path += "?x=1"
    elif variant == "accept-indent":
        extra = {"HTTP_ACCEPT": "application/json; indent=2"}
    elif variant == "head":
        method = "head"
    elif variant == "slash":
        path += "/"
    elif variant == "session":
        client = client_alice
    answers = []
    for on in (True, False):
        settings.BATCHHUB_FAST_STATUS = on
        answers.append(_seen(getattr(client, method)(path, **extra)))
    assert fast_answers == []
    assert answers[0] == answers[1]


def test_only_the_fast_answer_is_marked_for_the_access_log(api_alice, api_bob, published):
    # batchhub/weblog.py sums up, instead of logging one by one, exactly these answers.
    from batchhub.weblog import ANSWERED_FROM_CACHE

    _warm(api_alice, published)
    path = f"{API}/jobs/{published.public_id}"
    fast = api_alice.get(path)
    assert fast.status_code == 200 and fast.wsgi_request.META.get(ANSWERED_FROM_CACHE) is True
    assert api_bob.get(f"{API}/jobs").status_code == 200
    other = api_bob.get(path)  # another user's job: the stack's 404
    assert other.status_code == 404 and ANSWERED_FROM_CACHE not in other.wsgi_request.META
    listing = api_alice.get(f"{API}/jobs")
    assert ANSWERED_FROM_CACHE not in listing.wsgi_request.META
