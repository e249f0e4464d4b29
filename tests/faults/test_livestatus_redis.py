"""The job's live status (jobs/livestatus.py) across a Redis outage, on real servers: whatever
happened while Redis was away, the first poll after it is back answers the truth."""

from __future__ import annotations

import pytest
from django.db import connection

from jobs import livestatus
from jobs.models import Job, JobStatus
from tests.conftest import _api_client_for, make_job, rows_text
from tests.faults.test_faults import needs_services_script, services

pytestmark = [pytest.mark.e2e]


def _status(client, job: Job) -> str:
    response = client.get(f"/api/v1/jobs/{job.public_id}")
    assert response.status_code == 200, response.content
    return response.json()["status"]


def test_a_control_made_while_redis_was_away_is_what_the_next_poll_says(
    alice, worker_factory, settings
):
    needs_services_script()
    if not livestatus._redis():
        pytest.skip("needs CACHE_URL=redis://…")
    worker = worker_factory()
    job = make_job(alice, rows_text(200_000), processor="crash_test", params={"delay": 0.0002})
    worker.wait_for(
        lambda: Job.objects.get(pk=job.pk).succeeded > 0, timeout=120, message="progress"
    )
    client = _api_client_for(alice)
    assert _status(client, job) == "processing"
    assert livestatus.read(alice, job.public_id).status == JobStatus.PROCESSING  # from the key

    services("stop-redis")
    try:
        response = client.post(f"/api/v1/jobs/{job.public_id}/pause")
        assert response.status_code == 200 and response.json()["status"] == "paused"
        assert _status(client, job) == "paused"  # the database answers while Redis is away
    finally:
        services("start-redis")
    connection.close()

    assert _status(client, job) == "paused"
    # And once the key is there again, it holds the truth too.
    client.post(f"/api/v1/jobs/{job.public_id}/resume")
    assert livestatus.read(alice, job.public_id).status == JobStatus.PROCESSING
    client.post(f"/api/v1/jobs/{job.public_id}/cancel")
    assert _status(client, job) == "cancelled"
    assert livestatus.read(alice, job.public_id).status == JobStatus.CANCELLED


def test_a_publish_redis_refused_is_not_left_behind_by_a_stale_key(alice, worker_factory):
    """Redis stays up but refuses one write (a network blip): the old key must not be served."""
    needs_services_script()
    if not livestatus._redis():
        pytest.skip("needs CACHE_URL=redis://…")
    worker = worker_factory()
    job = make_job(alice, rows_text(200_000), processor="crash_test", params={"delay": 0.0002})
    worker.wait_for(
        lambda: Job.objects.get(pk=job.pk).succeeded > 0, timeout=120, message="progress"
    )
    client = _api_client_for(alice)
    assert livestatus.read(alice, job.public_id).status == JobStatus.PROCESSING
    real = livestatus._send
    livestatus._send = lambda *args: False
    try:
        assert client.post(f"/api/v1/jobs/{job.public_id}/pause").status_code == 200
    finally:
        livestatus._send = real
    assert _status(client, job) == "paused"
    client.post(f"/api/v1/jobs/{job.public_id}/cancel")
