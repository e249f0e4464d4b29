"""The status poll's precompiled job query returns exactly what services.get_job returns."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from jobs import lookup, services
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db


def _fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_get_job_matches_the_orm(alice, new_job, django_assert_num_queries):
    job = new_job(alice, "name,city\na,Oslo\n", rate_limit=60)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.PROCESSING,
        started_at=now,
        expires_at=now + timedelta(days=1),
        resume_at=now + timedelta(minutes=5),
        samples=[[now.timestamp() - 1, 0], [now.timestamp(), 1]],
        usage={"tokens": 12},
        column_map={"text": "city"},
        webhook_url="https://example.com/hook",
    )

    expected = services.get_job(alice, job.public_id)
    with django_assert_num_queries(1):
        found = lookup.get_job(alice, job.public_id)

    assert _fields(found) == _fields(expected)
    for value in (found.created_at, found.started_at, found.expires_at, found.resume_at):
        assert value.tzinfo is not None
    assert found._state.adding is False and found._state.db == "default"


def test_another_users_job_is_404(alice, bob, new_job):
    job = new_job(alice, "name\na\n")
    with pytest.raises(Http404):
        lookup.get_job(bob, job.public_id)


def test_an_expired_job_is_404_and_one_expiring_later_is_not(alice, new_job):
    job = new_job(alice, "name\na\n")
    Job.objects.filter(pk=job.pk).update(expires_at=timezone.now() + timedelta(minutes=1))
    assert lookup.get_job(alice, job.public_id).pk == job.pk

    Job.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Http404):
        lookup.get_job(alice, job.public_id)


@pytest.mark.parametrize("public_id", ["job_nope", "", "job_\x00"])
def test_unknown_or_impossible_ids_are_404(alice, public_id):
    with pytest.raises(Http404):
        lookup.get_job(alice, public_id)


def test_the_newest_event_comes_in_the_same_query(alice, new_job, django_assert_num_queries):
    from jobs import states

    job = new_job(alice, "name\na\n")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)
    with django_assert_num_queries(1):
        found = lookup.get_job(alice, job.public_id, last_event=True)
    newest = job.events.order_by("-id").first()
    assert found.last_event_id == (newest.id if newest else 0)
    event = states.record(job, "recovered", "restarted")
    assert lookup.get_job(alice, job.public_id, last_event=True).last_event_id == event.id
    assert _fields(lookup.get_job(alice, job.public_id, last_event=True)) == _fields(
        lookup.get_job(alice, job.public_id)
    )
    assert not hasattr(lookup.get_job(alice, job.public_id), "last_event_id")
