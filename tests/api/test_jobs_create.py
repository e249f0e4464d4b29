"""POST /api/v1/jobs: multipart and JSON input, idempotency, and every error the contract names."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.utils import timezone

from jobs import creation
from jobs.models import Job, JobEvent

from .conftest import API, assert_error, create_form, create_json, upload

pytestmark = pytest.mark.django_db


def test_multipart_upload_creates_a_queued_job(api_alice, alice):
    response = create_form(
        api_alice, "name,text\nann,hello\nbob,bye\n", name="greetings", id_column="name"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("job_")
    assert body["name"] == "greetings"
    assert body["processor"] == "template"
    assert body["params"]["template"] == "{name}!"
    assert body["status"] == "queued"
    assert body["columns"] == ["name", "text"]
    assert body["id_column"] == "name"
    assert response["Location"] == body["links"]["self"]
    job = Job.objects.get(public_id=body["id"])
    assert job.owner == alice
    assert job.input_file.read() == b"name,text\nann,hello\nbob,bye\n"
    # Who asked is on the timeline: the user and the key's name.
    assert JobEvent.objects.get(job=job, type="created").actor == "alice (API key tests)"


def test_json_rows_create_a_job(api_alice):
    response = create_json(
        api_alice,
        [{"text": "I love it"}, {"text": "awful"}],
        processor="sentiment",
        params={"threshold": 0.1},
        name="reviews",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "reviews"
    assert body["processor"] == "sentiment"
    assert body["params"] == {"threshold": 0.1}
    assert body["columns"] == ["text"]


def test_column_map_and_extras_are_kept(api_alice):
    response = create_form(
        api_alice,
        "review\nnice\n",
        processor="sentiment",
        params={},
        column_map={"text": "review"},
        concurrency="2",
        rate_limit="30",
        max_attempts="5",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["column_map"] == {"text": "review"}
    assert (body["concurrency"], body["rate_limit"], body["max_attempts"]) == (2, 30, 5)


def test_same_idempotency_key_and_body_returns_the_first_job(api_alice):
    rows = [{"name": "ann"}]
    first = create_json(api_alice, rows, headers={"Idempotency-Key": "k-1"})
    again = create_json(api_alice, rows, headers={"Idempotency-Key": "k-1"})

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


def test_same_idempotency_key_with_an_upload_returns_the_first_job(api_alice):
    first = create_form(api_alice, "name\nann\n", headers={"Idempotency-Key": "up-1"})
    again = create_form(api_alice, "name\nann\n", headers={"Idempotency-Key": "up-1"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_same_idempotency_key_with_another_body_is_a_409(api_alice):
    create_json(api_alice, [{"name": "ann"}], headers={"Idempotency-Key": "k-2"})
    other = create_json(api_alice, [{"name": "bob"}], headers={"Idempotency-Key": "k-2"})

    assert_error(other, 409, "idempotency_conflict")
    assert Job.objects.count() == 1


@pytest.mark.parametrize("same_body", [True, False])
def test_a_request_racing_the_first_with_its_key_gets_the_first_job(
    api_alice, monkeypatch, same_body
):
    _race(api_alice, monkeypatch, same_body)


@pytest.mark.django_db(transaction=True)
def test_the_race_is_settled_outside_a_test_transaction_too(api_alice, monkeypatch):
    # As a server runs it: no outer transaction, the insert's own atomic block rolls back.
    _race(api_alice, monkeypatch, True)


def _race(api_alice, monkeypatch, same_body: bool) -> None:
    # Two requests with one key at once: the second looked before the first's job was there.
    # It used to free the key (its job lost it) and make a second job; the unique key now
    # settles it, and the second gets the first job (or the conflict, for another body).
    from jobs import creation

    first = create_json(api_alice, [{"name": "ann"}], headers={"Idempotency-Key": "race"})
    looked = []
    real = creation._earlier

    def not_there_yet(*args):
        looked.append(args)
        return None if len(looked) == 1 else real(*args)

    monkeypatch.setattr(creation, "_earlier", not_there_yet)
    rows = [{"name": "ann" if same_body else "bob"}]
    again = create_json(api_alice, rows, headers={"Idempotency-Key": "race"})
    if same_body:
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    else:
        assert_error(again, 409, "idempotency_conflict")
    assert len(looked) == 2
    assert list(Job.objects.values_list("public_id", "idempotency_key")) == [
        (first.json()["id"], "race")
    ]


def test_idempotency_keys_are_per_user(api_alice, api_bob):
    a = create_json(api_alice, [{"name": "ann"}], headers={"Idempotency-Key": "shared"})
    b = create_json(api_bob, [{"name": "ann"}], headers={"Idempotency-Key": "shared"})

    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


def test_invalid_csv_is_a_400_with_line_errors_and_creates_nothing(api_alice):
    response = create_form(api_alice, "name,text\nann,hello\nbob,too,many\n")

    error = assert_error(response, 400, "invalid_csv")
    problems = error["details"]["errors"]
    assert problems[0]["line"] == 3
    assert set(problems[0]) == {"line", "column", "message"}
    assert "3 fields" in problems[0]["message"]
    assert Job.objects.count() == 0


def test_a_trailing_comma_on_every_line_is_taken_and_left_out(api_alice, run_job):
    response = create_form(api_alice, "name,text,\nann,hello,\nbob,bye,\n")

    assert response.status_code == 201, response.json()
    assert response.json()["columns"] == ["name", "text"]
    job = run_job(Job.objects.get(public_id=response.json()["id"]))
    results = api_alice.get(f"{API}/jobs/{job.public_id}/results")
    lines = b"".join(results.streaming_content).decode().splitlines()
    assert lines[0].startswith("name,text,") and lines[1].startswith("ann,hello,ann!")


def test_a_value_under_the_unnamed_trailing_column_is_invalid_csv(api_alice):
    response = create_form(api_alice, "name,text,\nann,hello,\nbob,bye,oops\n")

    error = assert_error(response, 400, "invalid_csv")
    assert [(p["line"], p["column"]) for p in error["details"]["errors"]] == [(3, 3)]
    assert "no name in the header" in error["details"]["errors"][0]["message"]
    assert Job.objects.count() == 0


def test_missing_required_column_is_invalid_csv(api_alice):
    response = create_form(api_alice, "name\nann\n", processor="sentiment", params={})

    error = assert_error(response, 400, "invalid_csv")
    assert "text" in error["details"]["errors"][0]["message"]


def test_empty_rows_are_invalid_csv(api_alice):
    assert_error(create_json(api_alice, []), 400, "invalid_csv")


def test_unknown_processor_is_invalid_request(api_alice):
    error = assert_error(
        create_json(api_alice, [{"a": 1}], processor="nope", params={}), 400, "invalid_request"
    )
    assert "nope" in error["message"]


def test_bad_params_are_invalid_request(api_alice):
    response = create_json(
        api_alice, [{"text": "x"}], processor="sentiment", params={"threshold": 5}
    )

    error = assert_error(response, 400, "invalid_request")
    assert "threshold" in error["message"]
    assert Job.objects.count() == 0


def test_params_that_are_not_json_are_invalid_request(api_alice):
    response = api_alice.post(
        f"{API}/jobs",
        {"file": upload("name\nann\n"), "processor": "template", "params": "{not json"},
        format="multipart",
    )

    error = assert_error(response, 400, "invalid_request")
    assert "params" in error["details"]


def test_missing_file_and_rows_is_invalid_request(api_alice):
    response = api_alice.post(
        f"{API}/jobs", {"processor": "template", "params": "{}"}, format="multipart"
    )

    error = assert_error(response, 400, "invalid_request")
    assert "file" in error["details"]


def test_a_json_syntax_error_is_invalid_request(api_alice):
    response = api_alice.post(f"{API}/jobs", data='{"processor": ', content_type="application/json")

    assert_error(response, 400, "invalid_request")


def test_a_private_webhook_url_is_refused(api_alice):
    response = create_json(api_alice, [{"name": "ann"}], webhook_url="http://127.0.0.1/hook")

    error = assert_error(response, 400, "invalid_request")
    assert "webhook_url" in error["details"]


@pytest.mark.parametrize(
    "content_type", ["text/csv", "application/x-www-form-urlencoded", "application/xml"]
)
def test_other_media_types_are_415(api_alice, content_type):
    response = api_alice.post(f"{API}/jobs", data="name\nann\n", content_type=content_type)

    assert_error(response, 415, "unsupported_media_type")


# --- size limits ---------------------------------------------------------------------------------


def _files_under(path) -> list:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_an_upload_over_the_limit_is_413_and_nothing_is_kept(api_alice, settings, tmp_path):
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 2048
    # Force the temporary-file handler, so a partly stored upload would show up on disk.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "upload-tmp").mkdir()
    big = "name,text\n" + "".join(f"person{i},some text here {i}\n" for i in range(400))
    assert len(big) > 2048

    response = create_form(api_alice, big)

    error = assert_error(response, 413, "file_too_large")
    assert error["details"] == {"max_bytes": 2048}
    assert Job.objects.count() == 0
    assert _files_under(settings.MEDIA_ROOT) == []
    assert _files_under(tmp_path / "upload-tmp") == []


def test_an_upload_whose_content_length_is_far_over_is_refused_before_reading(api_alice, settings):
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 1024
    big = "name\n" + "x\n" * 700_000  # well past limit + the allowance for form fields

    response = create_form(api_alice, big)

    assert_error(response, 413, "file_too_large")
    assert Job.objects.count() == 0


def test_an_upload_at_the_limit_is_accepted(api_alice, settings):
    text = "name\n" + "".join(f"p{i}\n" for i in range(300))
    settings.BATCHHUB_MAX_UPLOAD_BYTES = len(text.encode())

    assert create_form(api_alice, text).status_code == 201


def test_a_json_body_over_its_limit_is_413(api_alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    rows = [{"name": f"person {i}"} for i in range(200)]

    assert_error(create_json(api_alice, rows), 413, "file_too_large")


# --- quotas --------------------------------------------------------------------------------------


def test_too_many_active_jobs_is_quota_exceeded_with_retry_after(api_alice, settings):
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 2
    assert create_json(api_alice, [{"name": "a"}]).status_code == 201
    assert create_json(api_alice, [{"name": "b"}]).status_code == 201

    response = create_json(api_alice, [{"name": "c"}])

    error = assert_error(response, 429, "quota_exceeded")
    assert error["details"] == {"limit": "active_jobs", "max": 2}
    assert error["message"] == (
        "You have 2 active jobs; the limit is 2. Wait for one to finish or cancel one."
    )
    # Queued jobs have no estimate yet and may end at any moment (a small one within a second).
    assert response["Retry-After"] == "5"
    assert Job.objects.count() == 2


def test_paused_jobs_alone_give_the_quota_retry_after_a_minute(api_alice, alice, settings):
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 1
    assert create_json(api_alice, [{"name": "a"}]).status_code == 201
    Job.objects.filter(owner=alice).update(status="paused")

    response = create_json(api_alice, [{"name": "b"}])

    assert_error(response, 429, "quota_exceeded")
    assert response["Retry-After"] == "60"


def test_the_quota_retry_after_is_when_the_soonest_job_should_end(api_alice, alice, settings):
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 1
    assert create_json(api_alice, [{"name": "a"}]).status_code == 201
    now = timezone.now().timestamp()
    # 100 rows done in the last 10 s, 1,000 to go: 100 s at 10 rows/s.
    Job.objects.filter(owner=alice).update(
        status="processing",
        total=1100,
        pending=1000,
        succeeded=100,
        samples=[[now - 10, 0], [now, 100]],
    )

    response = create_json(api_alice, [{"name": "b"}])

    assert_error(response, 429, "quota_exceeded")
    assert 98 <= int(response["Retry-After"]) <= 100
    assert Job.objects.count() == 1


def test_a_create_racing_past_the_quota_check_is_still_refused(api_alice, alice, settings):
    # Parallel creates all passed the count before any had saved: 15 at once made 12 active
    # jobs against a limit of 10. Here a "parallel" job lands while this request reads input.
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 2
    assert create_json(api_alice, [{"name": "a"}]).status_code == 201
    validate = creation.validate_input

    def validate_while_another_request_saves(*args, **kwargs):
        Job.objects.create(owner=alice, name="parallel", processor="template", params={})
        return validate(*args, **kwargs)

    with mock.patch.object(creation, "validate_input", validate_while_another_request_saves):
        response = create_json(api_alice, [{"name": "b"}])

    error = assert_error(response, 429, "quota_exceeded")
    assert error["message"].startswith("You have 2 active jobs; the limit is 2.")
    assert Job.objects.filter(owner=alice).count() == 2


def test_too_many_rows_is_413_too_many_rows_not_retryable(api_alice, settings):
    settings.BATCHHUB_MAX_ROWS = 3

    response = create_form(api_alice, "name\na\nb\nc\nd\n")

    error = assert_error(response, 413, "too_many_rows")
    assert error["details"] == {"limit": "rows_per_job", "max": 3}
    assert error["message"] == "The input has 4 rows; the limit is 3 rows per job."
    assert "Retry-After" not in response
    assert Job.objects.count() == 0


def test_too_many_json_rows_is_413_too_many_rows(api_alice, settings):
    settings.BATCHHUB_MAX_ROWS = 2

    response = create_json(api_alice, [{"name": "a"}, {"name": "b"}, {"name": "c"}])

    error = assert_error(response, 413, "too_many_rows")
    assert error["message"] == "The input has 3 rows; the limit is 2 rows per job."
    assert "Retry-After" not in response
    assert Job.objects.count() == 0


def test_multipart_extras_must_be_numbers(api_alice):
    error = assert_error(
        create_form(api_alice, "name\nann\n", concurrency="lots"), 400, "invalid_request"
    )
    assert "concurrency" in error["details"]


def test_the_params_string_must_hold_an_object(api_alice):
    response = api_alice.post(
        f"{API}/jobs",
        {"file": upload("name\nann\n"), "processor": "template", "params": json.dumps([1, 2])},
        format="multipart",
    )
    assert_error(response, 400, "invalid_request")
