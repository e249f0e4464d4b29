"""Another user's job is indistinguishable from a missing one: 404 for every endpoint and verb."""

from __future__ import annotations

import pytest

from jobs.models import Job, JobStatus

from .conftest import API, assert_error

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", ""),
    ("patch", ""),
    ("delete", ""),
    ("post", "/pause"),
    ("post", "/resume"),
    ("post", "/cancel"),
    ("post", "/retry"),
    ("get", "/results"),
    ("get", "/results?format=jsonl"),
    ("get", "/rows"),
    ("get", "/events"),
]


@pytest.mark.parametrize("method,suffix", ENDPOINTS)
def test_bob_gets_404_on_alices_job_and_changes_nothing(
    api_bob, alice, new_job, run_job, method, suffix
):
    job = run_job(new_job(alice, "name\na\n"))
    before = Job.objects.filter(pk=job.pk).values().get()

    response = (
        getattr(api_bob, method)(
            f"{API}/jobs/{job.public_id}{suffix}", {"name": "mine now"}, format="json"
        )
        if method == "patch"
        else getattr(api_bob, method)(f"{API}/jobs/{job.public_id}{suffix}")
    )

    error = assert_error(response, 404, "not_found")
    # The same answer as for an id that does not exist at all.
    missing = getattr(api_bob, method)(f"{API}/jobs/job_01AAAAAAAAAAAAAAAAAAAAAAAA{suffix}")
    assert missing.status_code == 404 and missing.json()["error"] == error
    assert Job.objects.filter(pk=job.pk).values().get() == before


@pytest.mark.parametrize("method,suffix", [("post", "/pause"), ("post", "/cancel"), ("delete", "")])
def test_bob_cannot_touch_alices_running_job(api_bob, alice, new_job, method, suffix):
    job = new_job(alice, "name\na\n")

    assert_error(getattr(api_bob, method)(f"{API}/jobs/{job.public_id}{suffix}"), 404, "not_found")
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_bob_does_not_see_alices_jobs_in_the_list(api_bob, alice, new_job):
    new_job(alice, "name\na\n")
    assert api_bob.get(f"{API}/jobs").json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }


def test_a_session_user_gets_404_on_anothers_job(client_bob, alice, new_job):
    job = new_job(alice, "name\na\n")
    assert_error(client_bob.get(f"{API}/jobs/{job.public_id}"), 404, "not_found")
