"""POST /jobs/validate: the same checks as creation, nothing created."""

from __future__ import annotations

import pytest

from jobs.models import Job

from .conftest import API, assert_error, upload

pytestmark = pytest.mark.django_db


def test_valid_csv(api_alice):
    response = api_alice.post(
        f"{API}/jobs/validate",
        {
            "file": upload("name,text\nann,hi\nbob,yo\n"),
            "processor": "template",
            "params": '{"template": "{name}"}',
        },
        format="multipart",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True
    assert body["row_count"] == 2
    assert body["columns"] == ["name", "text"]
    assert body["errors"] == []
    assert body["preview"] == [{"name": "ann", "text": "hi"}, {"name": "bob", "text": "yo"}]
    assert (body["format"], body["encoding"], body["delimiter"]) == ("csv", "utf-8", ",")
    assert "sample" not in body
    assert Job.objects.count() == 0


def test_invalid_input_is_a_200_with_errors(api_alice):
    response = api_alice.post(
        f"{API}/jobs/validate",
        {"processor": "sentiment", "params": {}, "rows": [{"name": "x"}]},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    assert body["errors"] and "text" in body["errors"][0]["message"]
    assert Job.objects.count() == 0


def test_preview_is_at_most_ten_rows(api_alice):
    rows = [{"name": f"p{i}"} for i in range(25)]
    body = api_alice.post(
        f"{API}/jobs/validate",
        {"processor": "template", "params": {"template": "{name}"}, "rows": rows},
        format="json",
    ).json()

    assert body["row_count"] == 25
    assert [r["name"] for r in body["preview"]] == [f"p{i}" for i in range(10)]


def test_unknown_processor_is_400(api_alice):
    response = api_alice.post(
        f"{API}/jobs/validate", {"processor": "nope", "rows": [{"a": 1}]}, format="json"
    )
    assert_error(response, 400, "invalid_request")


def test_sample_over_ten_is_400(api_alice):
    response = api_alice.post(
        f"{API}/jobs/validate",
        {"processor": "sentiment", "rows": [{"text": "hi"}], "sample": 11},
        format="json",
    )
    error = assert_error(response, 400, "invalid_request")
    assert "sample" in error["details"]


def test_validate_is_415_for_other_media(api_alice):
    assert_error(
        api_alice.post(f"{API}/jobs/validate", data="a", content_type="text/plain"),
        415,
        "unsupported_media_type",
    )


def test_validate_over_the_upload_limit_is_413(api_alice, settings):
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 1024
    response = api_alice.post(
        f"{API}/jobs/validate",
        {
            "file": upload("name\n" + "abcdefgh\n" * 300),
            "processor": "template",
            "params": '{"template": "{name}"}',
        },
        format="multipart",
    )
    assert_error(response, 413, "file_too_large")


def test_sample_runs_the_processor_on_the_first_rows(api_alice):
    rows = [{"text": "I love it"}, {"text": "I hate it"}, {"text": "ok"}]
    body = api_alice.post(
        f"{API}/jobs/validate",
        {"processor": "sentiment", "params": {}, "rows": rows, "sample": 2},
        format="json",
    ).json()

    assert body["valid"] is True
    assert [(r["row"], r["output"]["sentiment_label"], r["error"]) for r in body["sample"]] == [
        (1, "positive", None),
        (2, "negative", None),
    ]
    assert Job.objects.count() == 0
