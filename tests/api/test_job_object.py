"""The job object field by field, GET/PATCH/DELETE of one job, and the job list."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from jobs.api.serializers import JobSerializer
from jobs.models import Job, JobStatus, Row
from jobs.representation import job_representation

from .conftest import API, assert_error, create_json

pytestmark = pytest.mark.django_db

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
CONTRACT_FIELDS = [
    "id",
    "name",
    "processor",
    "params",
    "status",
    "counts",
    "progress",
    "rows_per_second",
    "estimated_completion",
    "columns",
    "id_column",
    "column_map",
    "error",
    "webhook_url",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "expires_at",
    "links",
]
EXTRA_FIELDS = [
    "encoding",
    "delimiter",
    "concurrency",
    "rate_limit",
    "max_attempts",
    "usage",
    "pause_reason",
    "resume_at",
    "results_url",
    "results_url_expires_at",
]


def test_a_finished_job_has_every_contract_field(api_alice, alice, new_job, run_job):
    job = new_job(alice, "name,text\nann,a\nbob,b\n", id_column="name")
    job = run_job(job)

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()

    assert list(body) == CONTRACT_FIELDS + EXTRA_FIELDS
    assert body["id"] == job.public_id and body["id"].startswith("job_")
    assert body["name"] == "input.csv"
    assert body["processor"] == "template"
    assert body["params"] == {"template": "{name}!", "output_column": "text"}
    assert body["status"] == "completed"
    assert body["counts"] == {
        "total": 2,
        "pending": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 0,
    }
    assert body["progress"] == 1.0
    assert isinstance(body["rows_per_second"], float)
    assert body["estimated_completion"] is None  # only while processing
    assert body["columns"] == ["name", "text"]
    assert body["id_column"] == "name"
    assert body["column_map"] == {}
    assert body["error"] is None
    assert body["webhook_url"] is None
    for name in ("created_at", "started_at", "finished_at", "updated_at", "expires_at"):
        assert TIMESTAMP.match(body[name]), (name, body[name])
    base = f"http://testserver{API}/jobs/{job.public_id}"
    assert body["links"] == {
        "self": base,
        "results": f"{base}/results",
        "rows": f"{base}/rows",
        "events": f"{base}/events",
    }
    assert body["encoding"] == "utf-8"
    assert body["delimiter"] == ","
    assert (body["concurrency"], body["rate_limit"], body["max_attempts"]) == (4, None, 3)
    assert body["usage"] == {}
    assert (body["pause_reason"], body["resume_at"]) == ("", None)


def test_a_processing_job_shows_progress_rate_and_eta(api_alice, alice, new_job):
    job = new_job(alice, "name\na\nb\nc\nd\n")
    now = timezone.now().timestamp()
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.PROCESSING,
        total=4,
        pending=3,
        succeeded=1,
        samples=[[now - 10, 0], [now, 1]],
    )

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()

    assert body["status"] == "processing"
    assert body["progress"] == 0.25
    assert body["rows_per_second"] == 0.1
    assert TIMESTAMP.match(body["estimated_completion"])


def at_work(
    job: Job, *, total: int, succeeded: int, samples: list, working_for: float, started=False
) -> None:
    """`job` processing: `succeeded` of its `total` rows done, its throughput `samples`, its
    current working stretch begun `working_for` s ago (and the job then, if `started`)."""
    since = timezone.now() - timedelta(seconds=working_for)
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.PROCESSING,
        total=total,
        pending=total - succeeded,
        succeeded=succeeded,
        samples=samples,
        working_since=since,
        **({"started_at": since} if started else {}),
    )


def test_after_a_resume_the_rate_and_eta_are_the_pages(api_alice, client_alice, alice, new_job):
    # 20 s at 10 rows/s, 15 s paused, 5 s at 10 rows/s again: the API counted the pause as work
    # and said 5 rows/s (and an ETA twice as far) beside a page saying 10.
    job = new_job(alice, "name\n" + "x\n" * 1000)
    now = timezone.now().timestamp()
    before = [[now - 40 + t, 10 * t] for t in range(21)]
    after = [[now - 5 + t, 200 + 10 * t] for t in range(6)]
    at_work(job, total=1000, succeeded=250, samples=before + after, working_for=5)  # the resume

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    page = client_alice.get(f"/jobs/{job.public_id}/").content.decode()

    assert body["rows_per_second"] == 10.0
    assert 'data-testid="rate">10<' in page
    eta = datetime.fromisoformat(body["estimated_completion"].replace("Z", "+00:00"))
    assert 70 <= eta.timestamp() - now <= 80  # 750 rows at 10 rows/s
    assert "in 1 min 15 s" in page


def test_a_job_taking_turns_on_busy_workers_is_given_the_clocks_eta(
    api_alice, client_alice, alice, new_job
):
    # Three jobs on two pool processes: 10 s at 100 rows/s, then 30 s waiting for its next turn,
    # four times over. The page and the API said "in 1 min 40 s" for 10,000 rows (the last
    # burst's rate), then nothing once a wait ran past 30 s: the ETA jumped about every minute.
    job = new_job(alice, "name\n" + "x\n" * 14_000)
    now = timezone.now().timestamp()
    samples = [
        [now - 150 + 40 * turn + t, 1000 * turn + 100 * t] for turn in range(4) for t in range(11)
    ]
    at_work(job, total=14_000, succeeded=4_000, samples=samples, working_for=200, started=True)

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    page = client_alice.get(f"/jobs/{job.public_id}/").content.decode()

    assert body["rows_per_second"] == 100.0  # the recent rate: how fast its rows go
    eta = datetime.fromisoformat(body["estimated_completion"].replace("Z", "+00:00"))
    # 3,000 rows by the clock in the last 110 s of samples: 27 rows/s, 367 s for 10,000 rows.
    assert 355 <= eta.timestamp() - now <= 380
    assert "in 6 min" in page


def test_a_job_whose_turn_has_just_begun_keeps_its_eta(api_alice, client_alice, alice, new_job):
    # 10 s at 100 rows/s, 25 s waiting, twice; then 2 s of its next turn. Too short a stretch
    # for a recent rate: the page showed no rate and no ETA at the start of every turn.
    job = new_job(alice, "name\n" + "x\n" * 12_400)
    now = timezone.now().timestamp()
    samples = [
        [now - 72 + 35 * turn + t, 1000 * turn + 100 * t] for turn in range(2) for t in range(11)
    ]
    samples += [[now - 2 + t, 2000 + 100 * t] for t in range(3)]
    at_work(job, total=12_400, succeeded=2_200, samples=samples, working_for=100)

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    page = client_alice.get(f"/jobs/{job.public_id}/").content.decode()

    assert body["rows_per_second"] == 0.0  # no recent rate yet
    eta = datetime.fromisoformat(body["estimated_completion"].replace("Z", "+00:00"))
    # 2,200 rows by the clock in 72 s: about 30 rows/s, so about 334 s for 10,200 rows.
    assert 320 <= eta.timestamp() - now <= 350
    assert "in 5 min" in page


def test_a_pause_before_the_stretch_is_not_counted_in_the_eta(api_alice, alice, new_job):
    # 60 s at 10 rows/s, a 50 s pause, 10 s at 10 rows/s since the resume.
    job = new_job(alice, "name\n" + "x\n" * 1000)
    now = timezone.now().timestamp()
    samples = [[now - 120 + t, 10 * t] for t in range(61)]
    samples += [[now - 10 + t, 600 + 10 * t] for t in range(11)]
    at_work(job, total=1000, succeeded=700, samples=samples, working_for=10)
    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    eta = datetime.fromisoformat(body["estimated_completion"].replace("Z", "+00:00"))
    assert 27 <= eta.timestamp() - now <= 33  # 300 rows at 10 rows/s


@pytest.mark.parametrize("status", [JobStatus.PAUSED, JobStatus.COMPLETED, JobStatus.CANCELLED])
def test_a_job_not_processing_has_no_recent_rate_or_eta(api_alice, alice, new_job, status):
    job = new_job(alice, "name\na\nb\nc\nd\n")
    now = timezone.now().timestamp()
    Job.objects.filter(pk=job.pk).update(
        status=status, total=4, pending=3, succeeded=1, samples=[[now - 10, 0], [now, 1]]
    )
    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    assert (body["rows_per_second"], body["estimated_completion"]) == (0.0, None)


def test_a_failed_job_carries_its_error(api_alice, alice, new_job):
    job = new_job(alice, "name\na\n")
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, error_code="invalid_csv", error_message="Bad file."
    )

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()

    assert body["error"] == {"code": "invalid_csv", "message": "Bad file."}


def _serialized(job, request=None) -> dict:
    return JobSerializer(job, context={"request": request}).data


@pytest.mark.parametrize("state", ["queued", "processing", "paused", "failed", "completed"])
def test_job_representation_is_what_the_serializer_gives(
    alice, new_job, rf, state, run_job, monkeypatch
):
    """job_representation builds the dict by hand (speed); JobSerializer is the schema's word."""
    job = new_job(alice, "id,name\n1,a\n2,b\n", id_column="id")
    Job.objects.filter(pk=job.pk).update(webhook_url="https://example.com/h")
    now = timezone.now()
    if state == "completed":
        job = run_job(job)
    elif state != "queued":
        Job.objects.filter(pk=job.pk).update(
            status=state,
            total=2,
            pending=1,
            succeeded=1,
            started_at=now - timedelta(seconds=30),
            samples=[[now.timestamp() - 10, 0], [now.timestamp(), 1]],
            usage={"tokens": 3},
            column_map={"text": "name"},
            rate_limit=30,
            resume_at=now + timedelta(minutes=1) if state == "paused" else None,
            pause_reason="Paused by alice." if state == "paused" else "",
            error_code="invalid_csv" if state == "failed" else "",
            error_message="Bad file." if state == "failed" else "",
            expires_at=now + timedelta(days=3),
        )
    job = Job.objects.get(pk=job.pk)
    request = rf.get("/api/v1/jobs", HTTP_HOST="testserver")
    monkeypatch.setattr(timezone, "now", lambda: now)  # the same estimated completion for both

    for req in (request, None):
        fast, slow = job_representation(job, req), _serialized(job, req)
        assert fast == slow
        assert json.dumps(fast) == json.dumps(slow)  # same keys in the same order


def test_job_representation_without_a_request_uses_the_base_url(alice, new_job, settings):
    job = new_job(alice, "name\na\n")
    settings.BATCHHUB_BASE_URL = "https://batch.example.com"

    body = job_representation(job)

    assert body["links"]["self"] == f"https://batch.example.com{API}/jobs/{job.public_id}"
    assert TIMESTAMP.match(body["created_at"])


def test_timestamps_are_utc_even_if_the_server_zone_is_not(api_alice, alice, new_job, settings):
    settings.TIME_ZONE = "America/New_York"
    job = new_job(alice, "name\na\n")
    Job.objects.filter(pk=job.pk).update(
        created_at=timezone.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.UTC)
    )

    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()

    assert body["created_at"] == "2026-01-02T03:04:05.000006Z"


def test_get_an_unknown_job_is_404(api_alice):
    assert_error(api_alice.get(f"{API}/jobs/job_nope"), 404, "not_found")


def test_an_expired_job_is_gone(api_alice, alice, new_job):
    job = new_job(alice, "name\na\n")
    Job.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_error(api_alice.get(f"{API}/jobs/{job.public_id}"), 404, "not_found")


# --- PATCH / DELETE ------------------------------------------------------------------------------


def test_patch_renames(api_alice, alice, new_job):
    job = new_job(alice, "name\na\n")

    response = api_alice.patch(
        f"{API}/jobs/{job.public_id}", {"name": "  Renamed  "}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
    job.refresh_from_db()
    assert job.name == "Renamed"


@pytest.mark.parametrize(
    "body", [{"status": "paused"}, {"name": "x", "processor": "sentiment"}, {"params": {}}]
)
def test_patch_of_anything_but_the_name_is_400(api_alice, alice, new_job, body):
    job = new_job(alice, "name\na\n")

    error = assert_error(
        api_alice.patch(f"{API}/jobs/{job.public_id}", body, format="json"), 400, "invalid_request"
    )

    assert set(error["details"]) == set(body) - {"name"}
    job.refresh_from_db()
    assert job.name == "input.csv"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_patch_with_a_bad_name_is_400(api_alice, alice, new_job, name):
    job = new_job(alice, "name\na\n")
    assert_error(
        api_alice.patch(f"{API}/jobs/{job.public_id}", {"name": name}, format="json"),
        400,
        "invalid_request",
    )


def test_put_is_not_allowed(api_alice, alice, new_job):
    job = new_job(alice, "name\na\n")
    assert_error(
        api_alice.put(f"{API}/jobs/{job.public_id}", {"name": "x"}, format="json"),
        405,
        "method_not_allowed",
    )


def test_delete_removes_the_job_its_rows_and_files(api_alice, alice, new_job, run_job, settings):
    job = run_job(new_job(alice, "name\na\nb\n"))
    stored = settings.MEDIA_ROOT / job.input_file.name
    assert stored.exists() and Row.objects.filter(job=job).count() == 2

    response = api_alice.delete(f"{API}/jobs/{job.public_id}")

    assert response.status_code == 204
    assert response.content == b""
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not Row.objects.filter(job_id=job.pk).exists()
    assert not stored.exists()
    assert_error(api_alice.get(f"{API}/jobs/{job.public_id}"), 404, "not_found")


def test_delete_of_a_running_job_cancels_it_first(api_alice, alice, new_job):
    job = new_job(alice, "name\na\n")

    assert api_alice.delete(f"{API}/jobs/{job.public_id}").status_code == 204
    assert not Job.objects.filter(pk=job.pk).exists()


# --- list ----------------------------------------------------------------------------------------


def test_list_is_paginated_newest_first_and_only_mine(api_alice, alice, bob, new_job):
    mine = [new_job(alice, f"name\n{i}\n") for i in range(3)]
    new_job(bob, "name\nb\n")
    for i, job in enumerate(mine):
        Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=10 - i))

    body = api_alice.get(f"{API}/jobs?limit=2").json()

    assert body["count"] == 3
    assert [j["id"] for j in body["results"]] == [mine[2].public_id, mine[1].public_id]
    assert body["previous"] is None
    assert body["next"].startswith(f"http://testserver{API}/jobs?")
    second = api_alice.get(body["next"]).json()
    assert [j["id"] for j in second["results"]] == [mine[0].public_id]
    assert second["next"] is None
    assert list(second["results"][0]) == CONTRACT_FIELDS + EXTRA_FIELDS


def test_list_default_and_max_page_size(api_alice, alice, new_job):
    for i in range(3):
        new_job(alice, f"name\n{i}\n")
    body = api_alice.get(f"{API}/jobs?limit=100000").json()
    assert len(body["results"]) == 3  # capped at 500, so all of them


def test_list_filters_by_status_active_and_processor(api_alice, alice, new_job, run_job):
    done = run_job(new_job(alice, "name\na\n"))
    queued = new_job(alice, "name\nb\n")
    sentiment = new_job(alice, "text\nnice\n", processor="sentiment")

    def ids(query: str) -> set[str]:
        response = api_alice.get(f"{API}/jobs?{query}")
        assert response.status_code == 200
        return {j["id"] for j in response.json()["results"]}

    assert ids("status=completed") == {done.public_id}
    assert ids("status=active") == {queued.public_id, sentiment.public_id}
    assert ids("processor=sentiment") == {sentiment.public_id}
    assert ids("status=queued&processor=template") == {queued.public_id}


def test_list_with_an_unknown_status_is_400(api_alice):
    error = assert_error(api_alice.get(f"{API}/jobs?status=bogus"), 400, "invalid_request")
    assert "active" in error["details"]["status"]


def test_json_created_job_is_listed(api_alice):
    created = create_json(api_alice, [{"name": "ann"}]).json()
    assert api_alice.get(f"{API}/jobs").json()["results"][0]["id"] == created["id"]
