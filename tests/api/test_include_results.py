"""GET /jobs/{id}?include=results: small jobs carry their rows in the status answer."""

from __future__ import annotations

import json

import pytest

from jobs.models import Job
from tests.api.conftest import API, assert_error
from tests.factories import JobFactory, add_rows

pytestmark = pytest.mark.django_db


def test_a_small_job_embeds_its_row_objects(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\nann\nbob\n"))

    body = api_alice.get(f"{API}/jobs/{job.public_id}", {"include": "results"}).json()

    assert body["status"] == "completed"
    assert body["results"] == [
        {"row": 1, "ref": "1", "status": "succeeded", "input": {"name": "ann"},
         "output": {"text": "ann!"}, "error": None},
        {"row": 2, "ref": "2", "status": "succeeded", "input": {"name": "bob"},
         "output": {"text": "bob!"}, "error": None},
    ]
    json_download = api_alice.get(f"{API}/jobs/{job.public_id}/results", {"format": "json"})
    assert json.loads(b"".join(json_download.streaming_content)) == body["results"]


def test_without_include_there_is_no_results_key(api_alice, alice, new_job):
    job = new_job(alice, "name\nann\n")
    assert "results" not in api_alice.get(f"{API}/jobs/{job.public_id}").json()


def test_over_1000_rows_is_a_400(api_alice, alice, new_job):
    job = new_job(alice, "name\nann\n")
    Job.objects.filter(pk=job.pk).update(total=1001)
    error = assert_error(
        api_alice.get(f"{API}/jobs/{job.public_id}", {"include": "results"}),
        400,
        "invalid_request",
    )
    assert error["details"]["total"] == 1001


def test_exactly_1000_rows_are_embedded(api_alice, alice):
    # The bound is the answer's, not the engine's: the rows are made as a finished job holds them.
    job = JobFactory(owner=alice, rows=1000, columns=["name"], params={"template": "{name}!"})
    add_rows(job, 1000, output=lambda i: {"text": f"name{i}!"})
    body = api_alice.get(f"{API}/jobs/{job.public_id}", {"include": "results"}).json()
    assert len(body["results"]) == 1000 and body["results"][-1]["row"] == 1000
    assert body["results"][-1]["input"] == {"name": "name999"}
    assert body["results"][-1]["output"] == {"text": "name999!"}


def test_unknown_include_is_a_400(api_alice, alice, new_job):
    job = new_job(alice, "name\nann\n")
    assert_error(
        api_alice.get(f"{API}/jobs/{job.public_id}", {"include": "rows"}), 400, "invalid_request"
    )


def test_another_users_job_is_404_with_include(api_bob, alice, new_job):
    job = new_job(alice, "name\nann\n")
    assert_error(
        api_bob.get(f"{API}/jobs/{job.public_id}", {"include": "results"}), 404, "not_found"
    )
