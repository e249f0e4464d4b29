"""A job's JSON `rows` are read from the body a row at a time: the same rows, the same answers.

What the body's text may hold between and inside rows (line breaks as whitespace, integers
beyond 64 bits, escapes) reaches the job as it would from a list parsed whole, and a body that
is broken partway says where.
"""

from __future__ import annotations

import json

import pytest

from batchhub import jsonstream
from jobs.models import Job

from .conftest import API, assert_error

pytestmark = pytest.mark.django_db

HEAD = '{"processor": "template", "params": {"template": "{name}"}, "rows": '


def _post(client, path: str, body: str):
    return client.post(f"{API}/{path}", body, content_type="application/json")


def test_pretty_printed_rows_with_line_breaks_make_the_same_job(api_alice):
    rows = [{"name": "ann", "n": 1}, {"name": "b\u00e9a", "n": 10**22 + 1}, {"name": "c\\nd"}]
    body = json.dumps(
        {"processor": "template", "params": {"template": "{name}"}, "rows": rows}, indent=2
    ).replace("\n", "\r\n")
    report = _post(api_alice, "jobs/validate", body).json()
    assert report["valid"] is True, report
    assert report["row_count"] == 3
    assert report["preview"][1] == {"name": "béa", "n": 10**22 + 1}
    assert report["preview"][2]["name"] == "c\\nd"
    created = _post(api_alice, "jobs", body)
    assert created.status_code == 201, created.content[:300]
    stored = Job.objects.get().input_file.read().decode().splitlines()
    assert [json.loads(line) for line in stored] == rows


def test_a_syntax_error_late_in_the_rows_names_its_line_and_column(api_alice):
    lines = [HEAD + "["] + [f'  {{"name": "r{i}"}},' for i in range(500)] + ['  {"name" "x"}', "]}"]
    response = _post(api_alice, "jobs", "\n".join(lines))
    error = assert_error(response, 400, "invalid_request")
    assert "Expecting ':' delimiter: line 502 column 11" in error["message"], error["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("body", ['[{"name": "a"}]', '"rows"', "[1, 2"])
def test_a_body_that_is_not_an_object_is_a_400(api_alice, body):
    error = assert_error(_post(api_alice, "jobs", body), 400, "invalid_request")
    assert "must be an object" in error["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('\ufeff{"processor": "template"}', "Unexpected UTF-8 BOM"),
        ("   ", "Expecting value: line 1 column 4"),
        ("<xml/>", "Expecting value: line 1 column 1"),
    ],
)
def test_a_body_that_is_no_json_says_so(api_alice, body, words):
    error = assert_error(_post(api_alice, "jobs/validate", body), 400, "invalid_request")
    assert words in error["message"], error["message"]


def test_text_after_the_body_is_a_400(api_alice):
    error = assert_error(
        _post(api_alice, "jobs", HEAD + '[{"name": "a"}]} {}'), 400, "invalid_request"
    )
    assert "Extra data" in error["message"]


def test_rows_that_are_not_objects_are_named(api_alice):
    response = _post(api_alice, "jobs/validate", HEAD + '[{"name": "a"}, 5, "x", {"name": "b"}]}')
    error = assert_error(response, 400, "invalid_request")
    assert error["message"].startswith("rows[1]: "), error["message"]
    assert set(error["details"]["rows"]) == {"1", "2"}, error["details"]


def test_the_same_rows_body_with_an_idempotency_key_gives_the_first_job(api_alice):
    body = HEAD + '[{"name": "a"}, {"name": "b"}]}'
    first = api_alice.post(
        f"{API}/jobs", body, content_type="application/json", headers={"Idempotency-Key": "k1"}
    )
    again = api_alice.post(
        f"{API}/jobs", body, content_type="application/json", headers={"Idempotency-Key": "k1"}
    )
    other = api_alice.post(
        f"{API}/jobs",
        HEAD + '[{"name": "c"}]}',
        content_type="application/json",
        headers={"Idempotency-Key": "k1"},
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert_error(other, 409, "idempotency_conflict")


def test_retry_still_takes_a_list_of_row_ids(api_alice, alice_job):
    # Only a job's create and validate stream their rows; retry's rows are ids.
    response = api_alice.post(
        f"{API}/jobs/{alice_job.public_id}/retry",
        '{"rows": ["row_1"]}',
        content_type="application/json",
    )
    assert response.status_code in (200, 409), response.content[:300]
    assert "rows must" not in response.content.decode()


def test_documents_are_read_one_at_a_time_into_rows(api_alice):
    body = json.dumps(
        {
            "processor": "template",
            "params": {"template": "{text}"},
            "documents": ["hello\nworld", {"text": "b", "lang": "en"}, "c"],
        }
    )
    report = _post(api_alice, "jobs/validate", body).json()
    assert report["valid"] is True, report
    assert report["row_count"] == 3
    assert report["preview"][0] == {"text": "hello\nworld", "lang": None}
    assert _post(api_alice, "jobs", body).status_code == 201
    stored = Job.objects.get().input_file.read().decode().splitlines()
    assert [json.loads(line) for line in stored] == [
        {"text": "hello\nworld"},
        {"text": "b", "lang": "en"},
        {"text": "c"},
    ]


def test_a_document_that_is_neither_object_nor_string_is_named(api_alice):
    body = '{"processor": "template", "params": {"template": "{text}"}, "documents": ["a", 5]}'
    error = assert_error(_post(api_alice, "jobs", body), 400, "invalid_request")
    assert "documents[1] must be an object or a string" in error["message"]
    assert Job.objects.count() == 0


def test_a_row_is_stored_as_the_json_writer_writes_it_not_the_clients_text(api_alice):
    # The client's spaces and escapes do not reach the stored input; key order and a big
    # integer do (written by the stdlib, with its spacing: orjson cannot write it).
    body = HEAD + '[ {  "name" :  "\\u0041\\/" ,\n "a": 123456789012345678901234567890 } ]}'
    assert _post(api_alice, "jobs", body).status_code == 201
    stored = Job.objects.get().input_file.read().decode()
    assert stored == '{"name": "A/", "a": 123456789012345678901234567890}\n'


def test_a_row_padded_with_whitespace_is_stored_without_it(api_alice, settings):
    settings.BATCHHUB_MAX_ROW_BYTES = 4096
    body = HEAD + '[{"name": "a"' + " " * 10_000 + "}]}"
    assert _post(api_alice, "jobs", body).status_code == 201
    assert Job.objects.get().input_file.read() == b'{"name":"a"}\n'


def test_a_row_longer_than_a_line_may_be_is_refused_at_create(api_alice, settings):
    settings.BATCHHUB_MAX_ROW_BYTES = 4096
    body = HEAD + '[{"name": "a"}, {"name": "' + "x" * 5000 + '"}]}'
    for path in ("jobs/validate", "jobs"):
        error = assert_error(_post(api_alice, path, body), 400, "invalid_request")
        assert error["message"].startswith("rows[1] is 5,011 bytes"), error["message"]
        assert "4,096 bytes" in error["message"]
    assert Job.objects.count() == 0


def test_a_retry_whose_rows_differ_only_in_spelling_gets_the_first_job(api_alice):
    bodies = [
        HEAD + '[{"name": "a", "n": 1}]}',
        HEAD + '[ { "n" : 1 ,  "name" : "\\u0061" } ]}',
    ]
    answers = [
        api_alice.post(
            f"{API}/jobs", body, content_type="application/json", headers={"Idempotency-Key": "k"}
        )
        for body in bodies
    ]
    assert [a.status_code for a in answers] == [201, 200], answers[1].content[:300]
    assert answers[0].json()["id"] == answers[1].json()["id"]


def test_the_fingerprint_of_streamed_rows_is_that_of_the_list():
    # Keys sent before the rows were read a row at a time match as they did.
    from batchhub.jsonstream import loads_object
    from jobs.creation import request_fingerprint

    text = '{"processor": "p", "rows": [{"b": 1, "a": [1.5, null]}, {"c": "é"}]}'
    streamed = loads_object(text, ("rows",))
    listed = json.loads(text)
    assert request_fingerprint(streamed, None) == request_fingerprint(listed, None)


@pytest.mark.parametrize(
    ("path", "tail"),
    [("jobs", "]}"), ("jobs/validate", "]}"), ("jobs", '], "name": 5 ]}')],
)
def test_the_rows_file_is_closed_when_the_request_ends(api_alice, monkeypatch, path, tail):
    # Also when the body is refused after the rows were read; not left to the garbage collector.
    made = []
    monkeypatch.setattr(jsonstream.JSONLines, "__init__", _recording(made))
    _post(api_alice, path, HEAD + '[{"name": "a"}, {"name": "b"}' + tail)
    assert made
    assert all(lines.file.closed for lines in made)


def _recording(made):
    init = jsonstream.JSONLines.__init__

    def record(self):
        init(self)
        made.append(self)

    return record


def test_rows_past_the_limit_are_not_read(api_alice, monkeypatch, settings):
    settings.BATCHHUB_MAX_ROWS = 5
    made = []
    monkeypatch.setattr(jsonstream.JSONLines, "__init__", _recording(made))
    rows = ", ".join(f'{{"name": "r{i}", "x": [1, "]"]}}' for i in range(100))
    response = _post(api_alice, "jobs", HEAD + f"[{rows}], \"name\": \"after\"}}")
    error = assert_error(response, 413, "too_many_rows")
    assert error["message"].startswith("The input has more than 5 rows; the limit is 5")
    assert made[0].count == 6
    report = _post(api_alice, "jobs/validate", HEAD + f"[{rows}]}}").json()
    assert report["valid"] is False
    assert "more than 5 rows" in report["errors"][0]["message"], report["errors"]


def test_documents_past_the_limit_are_not_read(api_alice, settings):
    settings.BATCHHUB_MAX_ROWS = 5
    body = '{"processor": "template", "params": {"template": "{text}"}, "documents": '
    body += json.dumps(["d"] * 50) + "}"
    error = assert_error(_post(api_alice, "jobs", body), 413, "too_many_rows")
    assert error["message"].startswith("The input has more than 5 rows")


def test_reading_stops_at_as_many_non_objects_as_the_error_names(api_alice, monkeypatch):
    made = []
    monkeypatch.setattr(jsonstream.JSONLines, "__init__", _recording(made))
    body = HEAD + "[" + ",".join(["1"] * 10_000) + "]}"
    error = assert_error(_post(api_alice, "jobs", body), 400, "invalid_request")
    assert error["message"].startswith("rows[0]: "), error["message"]
    assert len(error["details"]["rows"]) == jsonstream.MAX_NAMED
    assert made[0].count == jsonstream.MAX_NAMED


def test_a_list_passed_over_unread_must_still_close(api_alice, settings):
    settings.BATCHHUB_MAX_ROWS = 1
    body = HEAD + '[{"name": "a"}, {"name": "b"}, {"name": "c"'
    error = assert_error(_post(api_alice, "jobs", body), 400, "invalid_request")
    assert "Expecting ']'" in error["message"], error["message"]


@pytest.mark.parametrize("body", ['[{"name": "a"}]', '"x"', "true", "null", "5"])
def test_a_body_that_is_not_an_object_has_its_details(api_alice, body):
    error = assert_error(_post(api_alice, "jobs", body), 400, "invalid_request")
    assert error["details"] == {"non_field_errors": [error["message"]]}


@pytest.mark.parametrize("body", ["NaN", "-Infinity", " Infinity "])
def test_a_body_that_is_a_bad_number_names_it(api_alice, body):
    error = assert_error(_post(api_alice, "jobs/validate", body), 400, "invalid_request")
    assert body.strip() in error["message"], error["message"]
    assert "must be an object" not in error["message"]


def test_a_row_with_a_nul_is_refused_not_mended(api_alice):
    body = HEAD + '[{"name": "a"}, {"name": "b\\u0000c"}]}'
    report = _post(api_alice, "jobs/validate", body).json()
    assert report["valid"] is False
    assert "Row 2 contains a NUL character" in report["errors"][0]["message"], report["errors"]


def test_a_half_character_in_a_top_level_key_is_named(api_alice):
    body = '{"processor": "template", "\\ud800x": 1, "rows": []}'
    error = assert_error(_post(api_alice, "jobs/validate", body), 400, "invalid_request")
    assert "\\ud800" in error["message"], error["message"]
