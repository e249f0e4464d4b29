"""A status poll's cache reads in one trip (jobs/poll.py): the key's entry, the job's live status
and the rate limit's count, with the answers, limits and headers of the separate reads.

These run with the cache the settings give (per-process in the unit runs, Redis in the
end-to-end run); one test runs the file cache of the embedded default.
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apikeys import keycache, keyformat
from apikeys import services as key_services
from batchhub import sliding_window
from batchhub.api import GroupRateThrottle
from jobs import livestatus, poll

pytestmark = pytest.mark.usefixtures("live_status_cache")


@pytest.fixture
def read_limit(monkeypatch):
    """Reads limited to 3 a minute, on a clock the test holds still."""
    monkeypatch.setattr(
        GroupRateThrottle, "THROTTLE_RATES", {**GroupRateThrottle.THROTTLE_RATES, "read": "3/min"}
    )
    monkeypatch.setattr(GroupRateThrottle, "timer", lambda self: 1_000_020.0)


def _key_id(alice, api_client) -> int:
    return alice.api_keys.get(digest=keyformat.digest(api_client.raw_key)).pk


def _count(alice, api_client) -> int:
    state = sliding_window.state(cache, f"rate:read:key:{_key_id(alice, api_client)}")
    return 0 if state is None else state[1]


def test_a_poll_from_the_cache_reads_everything_in_one_fetch(alice, published, api_alice):
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200  # the key check fills its entry
    fetched = poll.fetch(api_alice.raw_key, published.public_id, scope="read", now=1e9)
    assert json.loads(fetched.entry)["user_id"] == alice.pk
    assert fetched.live[0] == livestatus.newest_event_id(published.pk)
    assert json.loads(fetched.live[1])["status"] == "processing"
    bucket, outcome = fetched.rate_counted
    assert bucket == f"rate:read:key:{_key_id(alice, api_alice)}" and outcome.allowed
    with CaptureQueriesContext(connection) as queries:
        response = api_alice.get(url)
    assert response.status_code == 200 and response.json()["status"] == "processing"
    assert queries.captured_queries == []


def test_on_redis_a_poll_is_one_round_trip(redis_default, alice, published, api_alice, monkeypatch):
    redis = livestatus._redis()
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200
    client = redis._cache.get_client(write=True)
    sent: list[tuple] = []
    real = client.execute_command

    def counting(*args, **kwargs):
        sent.append(args[:1])
        return real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", counting)
    response = api_alice.get(url)
    assert response.status_code == 200 and response.json()["status"] == "processing"
    assert sent == [("EVALSHA",)]


def test_polls_count_once_in_the_keys_read_bucket_and_stop_at_the_limit(
    alice, published, api_alice, read_limit
):
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get("/api/v1/jobs").status_code == 200  # the same bucket, the full stack
    assert _count(alice, api_alice) == 1
    assert api_alice.get(url).status_code == 200
    assert api_alice.get(url).status_code == 200
    assert _count(alice, api_alice) == 3
    refused = api_alice.get(url)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    assert _count(alice, api_alice) == 3  # a refusal counts nothing
    assert api_alice.get("/api/v1/jobs").status_code == 429


def test_a_revoked_keys_poll_is_a_401_and_counts_nothing(alice, published, api_alice, read_limit):
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200
    assert api_alice.get(url).status_code == 200  # from the cached entry
    key = alice.api_keys.get(digest=keyformat.digest(api_alice.raw_key))
    key_services.revoke_key(alice, key.public_id)
    for _ in range(3):
        assert api_alice.get(url).status_code == 401
    assert _count(alice, api_alice) == 2


def test_an_expired_entry_is_a_401_and_counts_nothing(alice, published, api_alice, read_limit):
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200
    digest = keyformat.digest(api_alice.raw_key)
    entry = json.loads(keycache.read_text(digest))
    entry.update(expires_at="2020-01-01T00:00:00+00:00", expires_ts=1577836800.0)
    cache.delete(keycache.cache_key(digest))
    keycache._store(digest=digest, text=json.dumps(entry), only_new=True)
    assert api_alice.get(url).status_code == 401
    assert _count(alice, api_alice) == 1


def test_another_users_job_is_a_404_through_the_fetch(alice, bob, published, api_bob):
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_bob.get(url).status_code == 404
    assert api_bob.get(url).status_code == 404  # the second from bob's cached entry


def test_a_missing_live_key_is_read_from_the_database(alice, published, api_alice):
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200
    cache.delete(livestatus.cache_key(published.public_id))
    response = api_alice.get(url)
    assert response.status_code == 200 and response.json()["counts"]["total"] == 30


def test_the_file_cache_answers_polls_through_the_same_functions(
    alice, published, api_alice, read_limit, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        },
    }
    assert livestatus._redis() is None
    with django_capture_on_commit_callbacks(execute=True):
        livestatus.publish(published, livestatus.newest_event_id(published.pk))
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert api_alice.get(url).json()["status"] == "processing"
    assert queries.captured_queries == []
    assert api_alice.get(url).status_code == 200
    assert api_alice.get(url).status_code == 429
    state = sliding_window.state(caches["default"], f"rate:read:key:{_key_id(alice, api_alice)}")
    assert state is not None and state[1] == 3


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "stack"])
def test_a_poll_the_stack_answers_after_the_trip_counts_once(
    alice, published, api_alice, read_limit, settings, fast
):
    settings.BATCHHUB_FAST_STATUS = fast
    url = f"/api/v1/jobs/{published.public_id}"
    assert api_alice.get(url).status_code == 200
    assert _count(alice, api_alice) == 1
    cache.delete(livestatus.cache_key(published.public_id))  # the database answers this one
    assert api_alice.get(url).status_code == 200
    assert _count(alice, api_alice) == 2
    assert api_alice.get(f"{url}x").status_code == 404
    assert _count(alice, api_alice) == 3
