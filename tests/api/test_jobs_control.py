"""pause / resume / cancel / retry: 200 with the job object, 409 invalid_state when not allowed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import runner
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobEvent, JobStatus, Row, RowStatus
from tests.conftest import drive
from tests.factories import JobFactory, add_rows

from .conftest import API, assert_error, create_json

pytestmark = pytest.mark.django_db


def _processing(job) -> Job:
    loading.ingest(job.pk)  # reads the rows and moves the job to processing
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    return job


def test_pause_then_resume(api_alice, alice, new_job):
    job = _processing(new_job(alice, "name\na\nb\n"))

    paused = api_alice.post(f"{API}/jobs/{job.public_id}/pause")
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["pause_reason"]

    resumed = api_alice.post(f"{API}/jobs/{job.public_id}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "processing"
    actors = list(
        JobEvent.objects.filter(job=job, type__in=["paused", "resumed"]).values_list(
            "type", "actor"
        )
    )
    assert actors == [("paused", "alice (API key tests)"), ("resumed", "alice (API key tests)")]


def test_cancel_cancels_pending_rows(api_alice, alice, new_job):
    job = _processing(new_job(alice, "name\na\nb\n"))

    response = api_alice.post(f"{API}/jobs/{job.public_id}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["counts"]["cancelled"] == 2 and body["counts"]["pending"] == 0
    assert body["finished_at"] is not None


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_control_of_a_completed_job_is_409(api_alice, alice, new_job, run_job, action):
    job = run_job(new_job(alice, "name\na\n"))

    error = assert_error(
        api_alice.post(f"{API}/jobs/{job.public_id}/{action}"), 409, "invalid_state"
    )
    assert error["details"] == {"status": "completed"}


def test_resume_of_a_job_that_is_not_paused_is_409(api_alice, alice, new_job):
    job = _processing(new_job(alice, "name\na\n"))
    assert_error(api_alice.post(f"{API}/jobs/{job.public_id}/resume"), 409, "invalid_state")


def _partial_job(api, run_job):
    """A finished job whose 2nd and 4th rows failed (sentiment fails a null text)."""
    created = create_json(
        api,
        [{"text": "good"}, {"text": None}, {"text": "bad"}, {"text": None}],
        processor="sentiment",
        params={},
    ).json()
    job = run_job(Job.objects.get(public_id=created["id"]))
    assert job.status == JobStatus.PARTIAL
    return job


def test_retry_all_failed_rows(api_alice, run_job):
    job = _partial_job(api_alice, run_job)

    response = api_alice.post(f"{API}/jobs/{job.public_id}/retry")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "processing"
    assert body["counts"]["failed"] == 0 and body["counts"]["pending"] == 2
    assert body["finished_at"] is None


def test_retry_named_rows(api_alice, run_job):
    job = _partial_job(api_alice, run_job)

    response = api_alice.post(
        f"{API}/jobs/{job.public_id}/retry", {"rows": ["row_4"]}, format="json"
    )

    assert response.status_code == 200
    statuses = dict(Row.objects.filter(job=job).values_list("index", "status"))
    assert statuses[1] == RowStatus.FAILED and statuses[3] == RowStatus.PENDING


def test_retry_with_a_misspelt_rows_retries_nothing(api_alice, run_job):
    job = _partial_job(api_alice, run_job)

    response = api_alice.post(
        f"{API}/jobs/{job.public_id}/retry", {"row": ["row_4"]}, format="json"
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "Unknown field 'row' (did you mean 'rows'?)."
    assert Row.objects.filter(job=job, status=RowStatus.FAILED).count() == 2


def test_retry_of_a_running_job_is_409(api_alice, alice, new_job):
    job = _processing(new_job(alice, "name\na\n"))
    assert_error(api_alice.post(f"{API}/jobs/{job.public_id}/retry"), 409, "invalid_state")


def test_no_retry_of_a_cancelled_job_while_its_rows_in_flight_finish(api_alice, alice):
    # Rows in a request at the cancel are written by their threads when the answers come back;
    # a retry meanwhile let the job end with them running, or run them twice.
    job = JobFactory(
        owner=alice, status=JobStatus.CANCELLED, rows=3, succeeded=0, failed=1, running=1,
        cancelled=1,
    )  # fmt: skip
    add_rows(job, 3, status=lambda i: [RowStatus.FAILED, RowStatus.RUNNING, RowStatus.CANCELLED][i])
    answer = api_alice.post(f"{API}/jobs/{job.public_id}/retry")
    assert_error(answer, 409, "invalid_state")
    assert "1 row started before the cancel still finish" in answer.json()["error"]["message"]
    assert Row.objects.get(job=job, index=0).status == RowStatus.FAILED

    Row.objects.filter(job=job, index=1).update(status=RowStatus.SUCCEEDED)
    Job.objects.filter(pk=job.pk).update(running=0, succeeded=1)
    assert api_alice.post(f"{API}/jobs/{job.public_id}/retry").status_code == 200


def test_retry_without_failed_rows_is_409(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\na\n"))
    assert_error(api_alice.post(f"{API}/jobs/{job.public_id}/retry"), 409, "invalid_state")


@pytest.mark.parametrize(
    "rows",
    [
        ["row_99"],
        ["nonsense"],
        [],
        "row_1",
        [{"id": 1}],
        # A number too large for the database, and a digit int() refuses, were a 500.
        [9999999999999999999],
        ["row_2147483648"],
        ["²"],
    ],
)
def test_retry_with_bad_row_ids_is_400(api_alice, run_job, rows):
    job = _partial_job(api_alice, run_job)

    error = assert_error(
        api_alice.post(f"{API}/jobs/{job.public_id}/retry", {"rows": rows}, format="json"),
        400,
        "invalid_request",
    )
    if rows == ["nonsense"]:  # not a row name at all: it says both ways a row is named
        assert "(12), or as row_12" in error["message"], error
    assert Job.objects.get(pk=job.pk).status == JobStatus.PARTIAL


def test_no_retry_for_a_job_whose_params_the_workers_refuse(
    api_alice, client_alice, alice, new_job
):
    # Retried, its rows went to pending, the workers refused the params again and the rows
    # ended "cancelled", their errors gone: the button did worse than nothing.
    job = new_job(alice, "name\na\nb\n")
    loading.ingest(job.pk)
    Row.objects.filter(job=job, index=0).update(status=RowStatus.FAILED, error="earlier")
    Job.objects.filter(pk=job.pk).update(
        params={"template": "{name:>999999999}"}, pending=1, failed=1
    )
    job = drive(job, max_steps=5)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "invalid_params")

    response = api_alice.post(f"{API}/jobs/{job.public_id}/retry")
    error = assert_error(response, 409, "invalid_state")
    assert "retrying cannot help" in error["message"]
    assert Row.objects.get(job=job, index=0).error == "earlier"
    page = client_alice.get(f"/jobs/{job.public_id}/").content.decode()
    assert "Retry failed rows" not in page
    assert "Run again with the same settings" in page


def test_a_retry_after_the_rows_of_a_cancel_finished_runs_at_once(api_alice, alice, new_job):
    # The rows in a request at a cancel keep their chunk's lease until their deadline, and it
    # outlived them: a retry once they had finished set its rows pending behind that lease, and
    # the job sat "processing" with nothing running until the reaper restarted it, minutes later.
    job = _processing(new_job(alice, "name\na\nb\nc\n"))
    Row.objects.filter(job=job).update(status=RowStatus.SUCCEEDED)
    Row.objects.filter(job=job, index=0).update(status=RowStatus.FAILED, error="boom")
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.CANCELLED, pending=0, running=0, succeeded=2, failed=1
    )
    # As the cancelled loop left it for its rows in a request (chunk_loop.release_chunk).
    Chunk.objects.filter(job=job).update(
        done=True, lease_until=timezone.now() + timedelta(minutes=2), holder="host|1|2|3"
    )
    assert api_alice.post(f"{API}/jobs/{job.public_id}/retry").status_code == 200

    for _ in range(5):  # a worker's next steps, no lease cleared by hand
        if Job.objects.get(pk=job.pk).status != JobStatus.PROCESSING:
            break
        runner.work_once(job.pk)
    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    assert body["counts"]["pending"] == 0 and body["counts"]["succeeded"] == 3
    assert body["status"] != "processing"
