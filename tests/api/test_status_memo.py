"""The API status poll's body reused within a second (jobs/status_memo.py): the same bytes as a
fresh answer, and never the body of another state, host, owner or signing setting.

The second is pinned so that every poll of a test falls in it, as polls do under load.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from apikeys import keyformat
from apikeys import services as key_services
from batchhub.api import GroupRateThrottle
from jobs import fast_status, links, livestatus
from jobs.models import Job

API = "/api/v1"


@pytest.fixture(autouse=True)
def _clock(monkeypatch, live_status_cache, pinned_second):
    monkeypatch.setattr(links, "_expiry", lambda seconds: 2_000_000_000 + seconds)
    return pinned_second


@pytest.fixture
def renders(monkeypatch):
    """The jobs whose body the fast path rendered (a memo answer renders nothing)."""
    made = []
    real = fast_status.FastStatusMiddleware._render

    def spy(self, request, job):
        made.append(job.public_id)
        return real(self, request, job)

    monkeypatch.setattr(fast_status.FastStatusMiddleware, "_render", spy)
    return made


def _path(job) -> str:
    return f"{API}/jobs/{job.public_id}"


def _warm(client, job) -> None:
    assert client.get(_path(job)).status_code == 200  # the key's entry is now in the cache


def _publish(job, django_capture_on_commit_callbacks, **changes) -> None:
    Job.objects.filter(pk=job.pk).update(**changes)
    fresh = Job.objects.get(pk=job.pk)
    with django_capture_on_commit_callbacks(execute=True):
        livestatus.publish(fresh)


def test_polls_in_one_second_render_the_body_once(
    api_alice, published, renders, fast_answers, _clock
):
    _warm(api_alice, published)
    renders.clear()
    first = api_alice.get(_path(published))
    second = api_alice.get(_path(published))
    assert len(fast_answers) == 2 and renders == [published.public_id]
    assert first.content == second.content
    _clock[0] += 1
    assert api_alice.get(_path(published)).content == first.content
    assert len(renders) == 2  # a new second: rendered again


def test_a_reused_body_is_drfs_byte_for_byte(api_alice, published, settings, renders):
    _warm(api_alice, published)
    assert api_alice.get(_path(published)).status_code == 200  # the memo holds it now
    renders.clear()
    settings.BATCHHUB_FAST_STATUS = True
    on = api_alice.get(_path(published))
    settings.BATCHHUB_FAST_STATUS = False
    off = api_alice.get(_path(published))
    settings.BATCHHUB_FAST_STATUS = True
    assert renders == []  # `on` came from the memo
    assert on.status_code == off.status_code == 200
    assert list(on.headers.items()) == list(off.headers.items())
    assert on.content == off.content


def test_a_changed_status_is_never_served_the_old_body(
    api_alice, published, django_capture_on_commit_callbacks
):
    _warm(api_alice, published)
    assert api_alice.get(_path(published)).json()["status"] == "processing"
    with django_capture_on_commit_callbacks(execute=True):
        assert api_alice.post(f"{_path(published)}/pause").status_code == 200
    assert api_alice.get(_path(published)).json()["status"] == "paused"


def test_changed_counts_are_never_served_the_old_body(
    api_alice, published, django_capture_on_commit_callbacks
):
    _warm(api_alice, published)
    assert api_alice.get(_path(published)).json()["counts"]["succeeded"] == 0
    _publish(published, django_capture_on_commit_callbacks, succeeded=7, pending=23)
    assert api_alice.get(_path(published)).json()["counts"]["succeeded"] == 7


def test_another_host_gets_links_to_itself(api_alice, published, settings, fast_answers):
    settings.ALLOWED_HOSTS = ["testserver", "other.example"]
    _warm(api_alice, published)
    here = api_alice.get(_path(published)).json()
    there = api_alice.get(_path(published), HTTP_HOST="other.example").json()
    assert len(fast_answers) == 2
    assert here["links"]["self"].startswith("http://testserver/")
    assert there["links"]["self"].startswith("http://other.example/")
    assert there["results_url"].startswith("http://other.example/")
    secure = api_alice.get(_path(published), secure=True).json()
    assert secure["links"]["self"].startswith("https://testserver/")


def test_other_link_settings_get_their_own_signed_link(api_alice, published, settings):
    _warm(api_alice, published)
    before = api_alice.get(_path(published)).json()
    settings.BATCHHUB_LINK_SECONDS = 120
    after = api_alice.get(_path(published)).json()
    assert after["results_url_expires_at"] != before["results_url_expires_at"]
    assert after["results_url"] != before["results_url"]


def test_another_owner_never_gets_the_body(api_alice, api_bob, published, fast_answers):
    _warm(api_alice, published)
    assert api_bob.get(f"{API}/jobs").status_code == 200  # bob's key entry is cached too
    assert api_alice.get(_path(published)).status_code == 200  # in the memo now
    fast_answers.clear()
    response = api_bob.get(_path(published))
    assert response.status_code == 404 and fast_answers == []
    assert published.public_id.encode() not in response.content


def test_a_revoked_key_is_refused_with_the_body_in_memo(alice, api_alice, published, fast_answers):
    _warm(api_alice, published)
    assert api_alice.get(_path(published)).status_code == 200
    key = alice.api_keys.get(digest=keyformat.digest(api_alice.raw_key))
    key_services.revoke_key(alice, key.public_id)
    fast_answers.clear()
    assert api_alice.get(_path(published)).status_code == 401
    assert fast_answers == []


def test_the_rate_limit_counts_memo_answers(api_alice, published, monkeypatch, renders):
    monkeypatch.setattr(
        GroupRateThrottle, "THROTTLE_RATES", {**GroupRateThrottle.THROTTLE_RATES, "read": "3/min"}
    )
    monkeypatch.setattr(GroupRateThrottle, "timer", lambda self: 1020.0)
    _warm(api_alice, published)  # 1
    assert api_alice.get(_path(published)).status_code == 200  # 2: rendered
    assert api_alice.get(_path(published)).status_code == 200  # 3: from the memo
    assert len(renders) == 1
    assert api_alice.get(_path(published)).status_code == 429


def test_a_job_past_its_expiry_is_not_served_from_the_memo(
    api_alice, published, fast_answers, monkeypatch, django_capture_on_commit_callbacks
):
    soon = timezone.now() + dt.timedelta(hours=1)
    _publish(published, django_capture_on_commit_callbacks, expires_at=soon)
    _warm(api_alice, published)
    assert api_alice.get(_path(published)).status_code == 200
    later = soon + dt.timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    fast_answers.clear()
    assert api_alice.get(_path(published)).status_code == 404  # expired: the stack's answer
    assert fast_answers == []
