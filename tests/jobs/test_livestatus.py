"""The job's live status in the cache (jobs/livestatus.py) and the API key entry
(apikeys/keycache.py): what a poll answers from them, and when it must ask the database.

These run on both databases with the cache the settings give (per-process in the unit runs, Redis
in the end-to-end run); tests/faults/test_livestatus_redis.py restarts a real Redis.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apikeys import keycache, keyformat
from apikeys import services as key_services
from jobs import livestatus, runner, services, states
from jobs.models import Job, JobStatus
from jobs.representation import job_representation
from tests.api.conftest import create_json
from tests.conftest import drive

pytestmark = pytest.mark.usefixtures("live_status_cache")


def _without_links(body: dict) -> dict:
    # A signed link carries its expiry, which moves with the clock between two reads.
    return {k: v for k, v in body.items() if k not in ("results_url", "results_url_expires_at")}


def test_a_published_job_reads_back_as_the_database_has_it(alice, published):
    cached = livestatus.read(alice, published.public_id)
    assert cached is not None and cached.from_live_status
    truth = services.get_job(alice, published.public_id, last_event=True)
    assert _without_links(job_representation(cached)) == _without_links(job_representation(truth))
    assert cached.last_event_id == truth.last_event_id > 0


def _write_now(job: Job, last_event_id: int) -> None:
    """Write the key as a publish of `job` would once its transaction committed."""
    payload = json.dumps(livestatus.snapshot(job), separators=(",", ":"))
    livestatus._write(job.pk, job.public_id, livestatus._version(job), last_event_id, payload)


def test_the_key_is_a_plain_dict_with_the_owner_and_no_secrets(alice, published):
    last_event_id, payload = livestatus._load(published.public_id)
    assert last_event_id == livestatus.newest_event_id(published.pk) > 0
    assert f'"owner_id":{alice.pk}' in payload
    assert "password" not in payload and "idempotency_key" not in payload


def test_the_api_answers_a_poll_without_a_query(alice, published, api_alice):
    api_alice.get(f"/api/v1/jobs/{published.public_id}")  # the key check fills its entry
    with CaptureQueriesContext(connection) as queries:
        response = api_alice.get(f"/api/v1/jobs/{published.public_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "processing"
    assert response.json()["counts"]["pending"] == 30
    assert [q["sql"] for q in queries.captured_queries] == []


def test_missing_key_falls_back_to_the_database(alice, published, api_alice):
    cache.delete(livestatus.cache_key(published.public_id))
    assert livestatus.read(alice, published.public_id) is None
    response = api_alice.get(f"/api/v1/jobs/{published.public_id}")
    assert response.status_code == 200
    assert response.json()["counts"]["total"] == 30


def test_another_users_job_is_a_404_even_with_its_key_there(
    alice, bob, published, api_bob, client_bob
):
    assert livestatus.read(alice, published.public_id) is not None
    assert livestatus.read(bob, published.public_id) is None
    assert api_bob.get(f"/api/v1/jobs/{published.public_id}").status_code == 404
    assert client_bob.get(f"/jobs/{published.public_id}/progress/").status_code == 404


def test_the_job_page_partial_reads_the_key(alice, published, client_alice):
    Job.objects.filter(pk=published.pk).update(name="renamed behind the cache's back")
    url = f"/jobs/{published.public_id}/progress/"
    response = client_alice.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response.context["job"].from_live_status
    assert b"renamed behind" not in response.content  # the name as published
    assert b'<strong data-testid="pending">30</strong>' in response.content


def test_an_older_publish_never_replaces_a_newer_one(alice, published):
    old = Job.objects.get(pk=published.pk)
    with_newer = states.transition(published.pk, JobStatus.PAUSED, actor="alice")
    _write_now(with_newer, livestatus.newest_event_id(with_newer.pk))
    assert livestatus.read(alice, published.public_id).status == JobStatus.PAUSED
    # The processing row, published late (a loop's sync point that committed first).
    _write_now(old, livestatus.NO_NEW_EVENT)
    assert livestatus.read(alice, published.public_id).status == JobStatus.PAUSED


def test_every_control_publishes_before_it_answers(
    alice, published, api_alice, django_capture_on_commit_callbacks
):
    url = f"/api/v1/jobs/{published.public_id}"
    for action, status in (("pause", "paused"), ("resume", "processing"), ("cancel", "cancelled")):
        with django_capture_on_commit_callbacks(execute=True):
            assert api_alice.post(f"{url}/{action}").status_code == 200
        assert livestatus.read(alice, published.public_id).status == status
        assert api_alice.get(url).json()["status"] == status
    cached = livestatus.read(alice, published.public_id)
    assert cached.counts == Job.objects.get(pk=published.pk).counts  # the cancelled rows too


def test_retry_publishes(alice, django_capture_on_commit_callbacks, api_alice):
    # sentiment fails a null text
    created = create_json(
        api_alice, [{"text": "good"}, {"text": None}], processor="sentiment", params={}
    )
    job = Job.objects.get(public_id=created.json()["id"])
    with django_capture_on_commit_callbacks(execute=True):
        job = drive(job)
    assert job.status == JobStatus.PARTIAL and job.failed == 1
    assert livestatus.read(alice, job.public_id).status == JobStatus.PARTIAL
    with django_capture_on_commit_callbacks(execute=True):
        response = api_alice.post(f"/api/v1/jobs/{job.public_id}/retry", {}, format="json")
    assert response.status_code == 200
    cached = livestatus.read(alice, job.public_id)
    assert cached.status == JobStatus.PROCESSING and cached.failed == 0


def test_a_deleted_job_stays_gone_whatever_publishes_late(
    alice, published, api_alice, django_capture_on_commit_callbacks
):
    late = Job.objects.get(pk=published.pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_alice.delete(f"/api/v1/jobs/{published.public_id}").status_code == 204
    _write_now(late, 99)
    assert livestatus.read(alice, published.public_id) is None
    assert api_alice.get(f"/api/v1/jobs/{published.public_id}").status_code == 404


def test_the_sync_points_publish_the_counters(alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = drive(published)
    assert job.status == JobStatus.COMPLETED
    cached = livestatus.read(alice, job.public_id)
    assert cached.status == JobStatus.COMPLETED
    assert cached.counts == job.counts and cached.succeeded == 30
    assert cached.finished_at == job.finished_at


def test_a_cache_that_fails_never_fails_the_job(
    alice, published, monkeypatch, django_capture_on_commit_callbacks
):
    def away(*args, **kwargs):
        raise ConnectionError("cache away")

    monkeypatch.setattr(livestatus, "_redis", away)
    monkeypatch.setattr(cache, "get", away)
    monkeypatch.setattr(cache, "set", away)
    with django_capture_on_commit_callbacks(execute=True):
        job = drive(published)
    assert job.status == JobStatus.COMPLETED and job.succeeded == 30


def test_a_publish_the_cache_missed_is_made_before_the_next_read(
    alice, published, api_alice, monkeypatch, django_capture_on_commit_callbacks
):
    """The cache refused the cancel's publish but kept the old key (a blip, not a restart): the
    next poll must not answer `processing`."""
    real_send = livestatus._send
    monkeypatch.setattr(livestatus, "_send", lambda *a: False)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_alice.post(f"/api/v1/jobs/{published.public_id}/cancel").status_code == 200
    monkeypatch.setattr(livestatus, "_send", real_send)
    assert api_alice.get(f"/api/v1/jobs/{published.public_id}").json()["status"] == "cancelled"


def test_the_engine_withdraws_the_key_when_it_loses_the_database(alice, published):
    assert livestatus.read(alice, published.public_id) is not None
    runner._database_lost(published.pk, [], Exception("gone"))
    assert livestatus.read(alice, published.public_id) is None


# --- the API key entry ---------------------------------------------------------------------------


def test_a_key_check_is_one_cache_read_holding_no_password(alice, api_alice, published):
    api_alice.get("/api/v1/jobs")
    text = keycache.read_text(keyformat.digest(api_alice.raw_key))
    entry = json.loads(text)
    assert isinstance(entry, dict) and entry["user_id"] == alice.pk
    assert "password" not in text and alice.password not in text
    check = key_services.check_key(api_alice.raw_key)
    assert check.key is not None and check.key.owner.pk == alice.pk


def test_a_revoked_key_fails_at_once_although_its_entry_was_cached(alice, api_alice):
    assert api_alice.get("/api/v1/jobs").status_code == 200
    key = alice.api_keys.get(digest=keyformat.digest(api_alice.raw_key))
    key_services.revoke_key(alice, key.public_id)
    response = api_alice.get("/api/v1/jobs")
    assert response.status_code == 401
    # A check that read the database before the revoke cannot bring the entry back.
    keycache.remember(key)
    assert api_alice.get("/api/v1/jobs").status_code == 401


def test_a_deactivated_owners_key_fails_at_once(alice, api_alice):
    assert api_alice.get("/api/v1/jobs").status_code == 200
    alice.is_active = False
    alice.save()
    assert api_alice.get("/api/v1/jobs").status_code == 401


def test_an_expired_key_fails_from_its_entry(alice, api_alice, monkeypatch):
    assert api_alice.get("/api/v1/jobs").status_code == 200
    digest = keyformat.digest(api_alice.raw_key)
    entry = json.loads(keycache.read_text(digest))
    entry["expires_at"] = "2020-01-01T00:00:00+00:00"
    entry["expires_ts"] = 1577836800.0
    cache.delete(keycache.cache_key(digest))
    keycache._store(digest=digest, text=json.dumps(entry), only_new=True)
    assert api_alice.get("/api/v1/jobs").status_code == 401


def test_a_missed_publish_never_recreates_the_key_of_a_restarted_cache(
    alice, published, api_alice, monkeypatch, django_capture_on_commit_callbacks
):
    real_send = livestatus._send
    monkeypatch.setattr(livestatus, "_send", lambda *a, **k: False)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_alice.post(f"/api/v1/jobs/{published.public_id}/pause").status_code == 200
    monkeypatch.setattr(livestatus, "_send", real_send)
    cache.clear()  # the cache restarted: every key is gone
    assert livestatus.read(alice, published.public_id) is None
    assert livestatus._load(published.public_id) is None  # the retry did not write it back
    assert api_alice.get(f"/api/v1/jobs/{published.public_id}").json()["status"] == "paused"


def test_a_key_written_with_other_fields_is_not_used(alice, published):
    """After an upgrade that adds or removes a field, the old keys send polls to the database."""
    data = livestatus.snapshot(published)
    data["a_field_since_removed"] = 1
    livestatus._write(published.pk, published.public_id, 2**52, 0, json.dumps(data))
    assert livestatus.read(alice, published.public_id) is None


def test_a_publish_that_arrives_late_still_brings_its_event(alice, published):
    """A control's publish (its event) reaching the cache after a later sync point's (none)."""
    event = livestatus.newest_event_id(published.pk)
    control = Job.objects.get(pk=published.pk)
    control.status = JobStatus.PAUSED
    sync_point = Job.objects.get(pk=published.pk)
    sync_point.updated_at = control.updated_at + dt.timedelta(seconds=1)
    sync_point.succeeded = 7
    _write_now(sync_point, livestatus.NO_NEW_EVENT)
    _write_now(control, event + 5)
    cached = livestatus.read(alice, published.public_id)
    assert cached.succeeded == 7 and cached.last_event_id == event + 5


def test_a_sync_point_asks_the_database_for_the_event_only_when_the_key_is_missing(
    alice, published
):
    event = livestatus.newest_event_id(published.pk)
    cache.delete(livestatus.cache_key(published.public_id))
    with CaptureQueriesContext(connection) as queries:
        _write_now(published, livestatus.NO_NEW_EVENT)
    assert len(queries.captured_queries) == 1
    assert livestatus.read(alice, published.public_id).last_event_id == event
    with CaptureQueriesContext(connection) as queries:
        _write_now(published, livestatus.NO_NEW_EVENT)
    assert queries.captured_queries == []


def test_two_publishes_at_once_leave_the_newer(alice, published, monkeypatch):
    # A cancel's rows in a request come back together and their threads publish at once; on the
    # file or per-process cache each publish read the key then wrote it, so an older state read
    # before a newer one was written could be written after it: the API and the page then said
    # "1 running" of a job whose rows had all finished, for as long as the key lived.
    from django.core.cache import caches

    if livestatus._redis() is not None:
        pytest.skip("Redis compares and writes in one script")
    old = Job.objects.get(pk=published.pk)
    newer = states.transition(published.pk, JobStatus.PAUSED, actor="alice")
    newer_event = livestatus.newest_event_id(newer.pk)
    backend = type(caches["default"])
    real_get = backend.get

    def get(self, *args, **kwargs):
        value = real_get(self, *args, **kwargs)
        if threading.current_thread().name == "older":
            time.sleep(0.4)  # between its read and its write, the newer publish comes
        return value

    monkeypatch.setattr(backend, "get", get)
    older = threading.Thread(target=_write_now, args=(old, livestatus.NO_NEW_EVENT), name="older")
    older.start()
    time.sleep(0.1)
    _write_now(newer, newer_event)
    older.join()
    assert livestatus.read(alice, published.public_id).status == JobStatus.PAUSED
