"""GET /jobs/{id}/rows reads through the results module: its pages hold what the download holds."""

from __future__ import annotations

import json

import pytest

from jobs.models import Job, Row

from .conftest import API, create_json

pytestmark = pytest.mark.django_db

ROWS = [{"id": f"r{n}", "text": None if n % 3 == 0 else f"fine {n}"} for n in range(1, 8)]


@pytest.fixture
def finished(api_alice, run_job):
    created = create_json(api_alice, ROWS, processor="sentiment", params={}, id_column="id")
    assert created.status_code == 201, created.json()
    return run_job(Job.objects.get(public_id=created.json()["id"]))


def _downloaded(client, job, status: str) -> list[dict]:
    response = client.get(f"{API}/jobs/{job.public_id}/results?format=jsonl&status={status}")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _listed(client, job, status: str, limit: int) -> tuple[int, list[dict]]:
    url = f"{API}/jobs/{job.public_id}/rows?status={status}&limit={limit}"
    count, found = None, []
    while url:
        body = client.get(url).json()
        count = body["count"] if count is None else count
        assert body["count"] == count
        found.extend(body["results"])
        url = body["next"]
    return count, found


@pytest.mark.parametrize("limit", [1, 3, 500])
@pytest.mark.parametrize("status", ["all", "succeeded", "failed"])
def test_every_page_together_is_the_download(api_alice, finished, status, limit):
    expected = _downloaded(api_alice, finished, status)
    assert {r["status"] for r in expected} <= {"succeeded", "failed"} and len(expected) >= 2

    count, listed = _listed(api_alice, finished, status, limit)

    assert listed == expected
    assert count == len(expected)


def test_a_job_with_a_gap_in_its_indexes_lists_what_the_download_holds(api_alice, finished):
    Row.objects.filter(job=finished, index=6).delete()  # the last index is missing now
    Job.objects.filter(pk=finished.pk).update(total=6)

    expected = _downloaded(api_alice, finished, "all")
    count, listed = _listed(api_alice, finished, "all", 4)

    assert [r["row"] for r in listed] == [1, 2, 3, 4, 5, 6]
    assert listed == expected and count == 6


def test_an_offset_past_the_end_is_an_empty_page_with_the_count(api_alice, finished):
    for offset in (7, 8, 1000):
        body = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?offset={offset}").json()
        assert body["results"] == [] and body["count"] == 7 and body["next"] is None


@pytest.mark.parametrize(
    ("query", "name"),
    [("limit=0", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"), ("offset=-5", "offset")],
)
def test_a_paging_value_that_is_not_a_count_is_a_400(api_alice, finished, query, name):
    # DRF read these as the default page and offset 0: a script's bug paged through other rows.
    for path in (f"jobs/{finished.public_id}/rows", "jobs", f"jobs/{finished.public_id}/events"):
        answer = api_alice.get(f"{API}/{path}?{query}")
        assert answer.status_code == 400, (path, answer.content)
        error = answer.json()["error"]
        assert error["code"] == "invalid_request" and f"'{name}'" in error["message"]


def test_a_limit_past_the_most_is_the_most_and_empty_values_the_defaults(api_alice, finished):
    body = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?limit=100000&offset=").json()
    assert len(body["results"]) == body["count"]  # the job has fewer rows than 500
    assert api_alice.get(f"{API}/jobs?limit=&offset=0").status_code == 200
