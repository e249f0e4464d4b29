"""Results download (csv/jsonl/json), rows and events of a job."""

from __future__ import annotations

import csv
import io
import json

import pytest

from jobs.ingest import loading
from jobs.models import Job, Row

from .conftest import API, assert_error, create_json

pytestmark = pytest.mark.django_db

ROWS = [
    {"id": "r1", "text": "I love this"},
    {"id": "r2", "text": None},
    {"id": "r3", "text": '=HYPERLINK("http://evil")'},
    {"id": "r4", "text": "-3.5"},
    {"id": "r5", "text": "+cmd|' /C calc'!A0"},
]


@pytest.fixture
def finished(api_alice, run_job):
    created = create_json(
        api_alice, ROWS, processor="sentiment", params={}, id_column="id", name="reviews.csv"
    )
    assert created.status_code == 201, created.json()
    return run_job(Job.objects.get(public_id=created.json()["id"]))


def _download(client, job, query: str = ""):
    response = client.get(f"{API}/jobs/{job.public_id}/results{query}")
    assert response.status_code == 200, response.content
    return response, b"".join(response.streaming_content).decode("utf-8")


def test_csv_is_the_default_streamed_in_input_order_with_formulas_neutralised(api_alice, finished):
    response, text = _download(api_alice, finished)

    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="reviews-results.csv"'
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["id", "text", "sentiment_label", "sentiment_score", "_status", "_error"]
    assert [r[0] for r in table[1:]] == ["r1", "r2", "r3", "r4", "r5"]
    assert table[1][2] == "positive" and table[1][4] == "succeeded"
    assert table[2][4] == "failed" and table[2][5] == "The text is empty."
    assert table[3][1] == '\'=HYPERLINK("http://evil")'
    assert table[4][1] == "-3.5"  # a number, not a formula
    assert table[5][1].startswith("'+cmd")


def test_jsonl_has_one_row_object_per_line(api_alice, finished):
    response, text = _download(api_alice, finished, "?format=jsonl")

    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="reviews-results.jsonl"'
    lines = [json.loads(line) for line in text.splitlines()]
    assert [o["row"] for o in lines] == [1, 2, 3, 4, 5]
    first = lines[0]
    assert list(first) == ["row", "ref", "status", "input", "output", "error"]
    assert first["ref"] == "r1" and first["status"] == "succeeded"
    assert first["input"] == {"id": "r1", "text": "I love this"}
    assert first["output"]["sentiment_label"] == "positive" and first["error"] is None
    assert lines[1]["output"] is None and lines[1]["error"] == "The text is empty."
    # JSON keeps values as they are: no spreadsheet neutralisation outside CSV.
    assert lines[2]["input"]["text"].startswith("=HYPERLINK")


def test_json_is_one_array(api_alice, finished):
    response, text = _download(api_alice, finished, "?format=json")

    assert response["Content-Type"] == "application/json; charset=utf-8"
    rows = json.loads(text)
    assert [r["ref"] for r in rows] == ["r1", "r2", "r3", "r4", "r5"]


@pytest.mark.parametrize(
    "wanted,refs",
    [
        ("succeeded", ["r1", "r3", "r4", "r5"]),
        ("failed", ["r2"]),
        ("all", ["r1", "r2", "r3", "r4", "r5"]),
    ],
)
def test_status_filter(api_alice, finished, wanted, refs):
    response, text = _download(api_alice, finished, f"?format=jsonl&status={wanted}")

    assert [json.loads(line)["ref"] for line in text.splitlines()] == refs
    if wanted != "all":
        assert f"-{wanted}.jsonl" in response["Content-Disposition"]


def test_results_are_available_while_the_job_runs(api_alice, alice, new_job):
    job = new_job(alice, "name\na\nb\n")
    loading.ingest(job.pk)
    _, text = _download(api_alice, job)
    assert text.splitlines()[1:] == ["a,,pending,", "b,,pending,"]


def test_an_accept_header_asking_for_csv_is_fine(api_alice, finished):
    response = api_alice.get(f"{API}/jobs/{finished.public_id}/results", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200


@pytest.mark.parametrize("query,field", [("?format=xlsx", "format"), ("?status=pending", "status")])
def test_bad_format_or_status_is_400(api_alice, finished, query, field):
    error = assert_error(
        api_alice.get(f"{API}/jobs/{finished.public_id}/results{query}"), 400, "invalid_request"
    )
    assert field in error["details"]


# --- rows -----------------------------------------------------------------------------------------


def test_rows_are_paginated_row_objects(api_alice, finished):
    body = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?limit=2&offset=1").json()

    assert body["count"] == 5
    assert [r["ref"] for r in body["results"]] == ["r2", "r3"]
    assert body["results"][0] == {
        "row": 2,
        "ref": "r2",
        "status": "failed",
        "input": {"id": "r2", "text": None},
        "output": None,
        "error": "The text is empty.",
    }
    assert "offset=3" in body["next"] and body["previous"] is not None


def test_rows_status_filter(api_alice, finished):
    body = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?status=failed").json()

    assert body["count"] == 1
    assert [r["row"] for r in body["results"]] == [2]
    assert (
        api_alice.get(f"{API}/jobs/{finished.public_id}/rows?status=pending").json()["count"] == 0
    )


def test_rows_with_an_unknown_status_is_400(api_alice, finished):
    assert_error(
        api_alice.get(f"{API}/jobs/{finished.public_id}/rows?status=weird"), 400, "invalid_request"
    )


# --- events ---------------------------------------------------------------------------------------


def test_events_are_the_timeline_oldest_first(api_alice, finished):
    api_alice.post(f"{API}/jobs/{finished.public_id}/retry", {"rows": ["row_2"]}, format="json")

    body = api_alice.get(f"{API}/jobs/{finished.public_id}/events").json()

    events = body["results"]
    assert body["count"] == len(events)
    assert all(list(e) == ["at", "type", "message", "actor"] for e in events)
    types = [e["type"] for e in events]
    assert types[0] == "created" and types[-1] == "retry"
    assert "partial" in types
    assert events[-1]["actor"] == "alice (API key tests)"
    assert all(e["at"].endswith("Z") for e in events)


def _all_pages(client, url: str) -> list[dict]:
    found: list[dict] = []
    while url:
        body = client.get(url).json()
        found.extend(body["results"])
        url = body["next"]
    return found


def test_every_page_together_is_every_row_in_order(api_alice, finished):
    rows = _all_pages(api_alice, f"{API}/jobs/{finished.public_id}/rows?limit=2")
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5]
    last = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?limit=2&offset=4").json()
    assert [r["row"] for r in last["results"]] == [5] and last["next"] is None
    past = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?offset=50").json()
    assert past["results"] == [] and past["count"] == 5


def test_rows_with_a_gap_in_indexes_still_page_by_position(api_alice, finished):
    Row.objects.filter(job=finished, index=4).delete()  # the last index is missing now
    Job.objects.filter(pk=finished.pk).update(total=4)

    body = api_alice.get(f"{API}/jobs/{finished.public_id}/rows?limit=2&offset=2").json()

    assert [r["row"] for r in body["results"]] == [3, 4]


def test_results_with_an_unknown_status_is_400_naming_the_allowed_ones(api_alice, finished):
    error = assert_error(
        api_alice.get(f"{API}/jobs/{finished.public_id}/results?status=weird"),
        400,
        "invalid_request",
    )
    assert error["details"] == {"status": ["all", "succeeded", "failed"]}
    # The sentence a person reads names them too, not only the details a script reads.
    assert "use one of all, succeeded, failed" in error["message"]
