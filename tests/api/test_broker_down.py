"""A broker that is down costs the work a delay, not the request a 500 for a change it made."""

from __future__ import annotations

import pytest
from celery.app.task import Task
from kombu.exceptions import OperationalError

from jobs.models import Job

from .conftest import API, create_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down(monkeypatch):
    def refused(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(Task, "apply_async", refused)


def test_a_job_created_while_the_broker_is_down_is_a_201_and_waits_queued(
    api_alice, broker_down, django_capture_on_commit_callbacks, caplog
):
    # It answered 500 server_error with the job already committed: a client retrying without an
    # Idempotency-Key had the work done twice once the reaper ingested the first.
    with django_capture_on_commit_callbacks(execute=True):
        response = create_form(api_alice, "name\nann\n")
    assert response.status_code == 201, response.content
    job = Job.objects.get(public_id=response.json()["id"])
    assert job.status == "queued"
    assert "broker unavailable, jobs.ingest" in caplog.text


def test_a_cancel_while_the_broker_is_down_answers_for_the_cancel(
    api_alice, alice, broker_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = create_form(api_alice, "name\nann\nbob\n")
    job = Job.objects.get(public_id=created.json()["id"])
    Job.objects.filter(pk=job.pk).update(status="processing")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_alice.post(f"{API}/jobs/{job.public_id}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
