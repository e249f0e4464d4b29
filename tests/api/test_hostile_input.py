"""Hostile input: every bad file or body is a 4xx naming the place, fast, and creates nothing.

Deep nesting, numbers JSON cannot hold, wrong encodings, enormous lines and decompression
bombs, through create (400 invalid_csv or invalid_request; 413 for text over the decompressed
limit), validate (200, valid: false, or 400 for a body that is not JSON) and the other JSON
bodies of the API.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import time

import pytest
from django.core.exceptions import ValidationError
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from batchhub.jsonsafe import JSONLimitError, line_and_column
from batchhub.jsonsafe import loads as json_safe_loads
from jobs.forms import JSONTextField
from jobs.ingest import loading
from jobs.models import Job

from .conftest import API, assert_error, upload

pytestmark = pytest.mark.django_db

DEEP = "[" * 10_000 + "]" * 10_000
TEMPLATE = json.dumps({"template": "{name}"})


def _multipart(client, path: str, body: bytes, name: str, **fields):
    data = {"file": upload(body, name), "processor": "template", "params": TEMPLATE, **fields}
    return client.post(f"{API}/{path}", data, format="multipart")


def create_file(client, body: bytes, name: str = "input.csv", **fields):
    return _multipart(client, "jobs", body, name, **fields)


def validate_file(client, body: bytes, name: str = "input.csv", **fields):
    return _multipart(client, "jobs/validate", body, name, **fields)


def assert_refused_file(client, body: bytes, name: str, line: int | None, *words: str) -> dict:
    """Create is a 400 invalid_csv whose first error names the line; validate agrees; no job."""
    error = assert_error(create_file(client, body, name), 400, "invalid_csv")
    first = error["details"]["errors"][0]
    assert first["line"] == line, first
    for word in words:
        assert word in first["message"], first
    report = validate_file(client, body, name)
    assert report.status_code == 200
    assert report.json()["valid"] is False
    assert report.json()["errors"][0] == first
    assert Job.objects.count() == 0
    return first


def _bomb(block: bytes, repeat: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    # Concatenated gzip members read as one stream: a gigabyte costs milliseconds to build.
    member = gzip.compress(block, 9)
    return gzip.compress(head, 9) + member * repeat + gzip.compress(tail, 9)


# --- 1. deep nesting --------------------------------------------------------------------------


def test_deep_jsonl_line_is_refused_naming_the_line(api_alice):
    body = b'{"name": "ann"}\n{"name": ' + DEEP.encode() + b"}\n"
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", "nested more than 64")
    assert first["column"] == 1  # the column "name"


def test_deep_jsonl_first_line_is_refused_too(api_alice):
    body = b'{"name": ' + DEEP.encode() + b'}\n{"name": "ann"}\n'
    assert_refused_file(api_alice, body, "in.jsonl", 1, "Line 1", "nested")


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
def test_deep_rows_body_is_a_400_naming_line_and_column(api_alice, path):
    body = '{"processor": "template", "params": {}, "rows": [{"name": ' + DEEP + "}]}"
    response = api_alice.post(f"{API}/{path}", body, content_type="application/json")
    error = assert_error(response, 400, "invalid_request")
    assert "nested more than 64 levels deep at line 1, column" in error["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        # A row 62 levels deep, in a list in the body: 64 in all, the most a body may be.
        '{"processor": "template", "rows": [{"name": ' + "[" * 61 + "]" * 61 + "}]}",
        '{"processor": "template", "rows": [{"name": ' + "[" * 62 + "]" * 62 + "}]}",
        '{"processor": "template", "params": {"a": ' + "[" * 63 + "]" * 63 + '}, "rows": []}',
        '{"processor": "template", "params": {"a": ' + "[" * 62 + "]" * 62 + '}, "rows": []}',
        '{"processor": "template", "documents": [{"a": ' + "[" * 62 + "]" * 62 + "}]}",
    ],
)
def test_the_depth_bound_is_the_whole_bodys(api_alice, body):
    # Rows are read one at a time, yet bounded and located as the body read whole was.
    response = api_alice.post(f"{API}/jobs/validate", body, content_type="application/json")
    try:
        json_safe_loads(body)
    except JSONLimitError as exc:
        line, column = line_and_column(body, exc.char)
        error = assert_error(response, 400, "invalid_request")
        assert (
            f"nested more than 64 levels deep at line {line}, column {column}."
            in (error["message"])
        ), error["message"]
    else:
        assert "nested" not in response.content.decode()


def test_deep_params_string_is_a_400(api_alice):
    response = create_file(api_alice, b"name\nann\n", params='{"template": ' + DEEP + "}")
    error = assert_error(response, 400, "invalid_request")
    assert "params" in error["message"] and "nested more than 64" in error["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("patch", "jobs/{id}"), ("post", "jobs/{id}/retry"), ("post", "keys")],
)
def test_deep_bodies_elsewhere_are_400(api_alice, alice_job, method, path):
    url = f"{API}/{path.format(id=alice_job.public_id)}"
    response = getattr(api_alice, method)(
        url, '{"name": ' + DEEP + "}", content_type="application/json"
    )
    error = assert_error(response, 400, "invalid_request")
    assert "nested more than 64 levels deep at line 1, column" in error["message"]


def test_deep_params_in_the_html_form_is_a_field_error():
    with pytest.raises(ValidationError) as caught:
        JSONTextField().clean('{"a": ' + DEEP + "}")
    assert caught.value.messages == ["This JSON is nested more than 64 levels deep at a."]


# --- 2. numbers JSON cannot hold ------------------------------------------------------------


@pytest.mark.parametrize("literal", ["1e400", "NaN", "Infinity", "-Infinity"])
def test_non_finite_number_in_jsonl_is_refused_with_line_and_column(api_alice, literal):
    body = f'{{"name": "ann", "score": 1}}\n{{"name": "bob", "score": {literal}}}\n'.encode()
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", literal, "finite")
    assert first["column"] == 2
    assert '"score"' in first["message"]


@pytest.mark.parametrize("literal", ["1e400", "NaN", "-Infinity"])
@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
def test_non_finite_number_in_rows_is_a_400_naming_the_row(api_alice, literal, path):
    body = (
        '{"processor": "template", "params": {"template": "{name}"}, '
        f'"rows": [{{"name": "a"}}, {{"name": "b", "score": [1, {literal}]}}]}}'
    )
    response = api_alice.post(f"{API}/{path}", body, content_type="application/json")
    error = assert_error(response, 400, "invalid_request")
    assert f"holds the number {literal} at rows[1].score[1]" in error["message"]
    assert Job.objects.count() == 0


# --- 2b. half a character: a lone surrogate escape ------------------------------------------------
# A JSON escape is the only way text can hold one; no encoder writes it, so every store and
# renderer later failed on it (a 500 after the job was made, a job list that 500s for good).


def test_lone_surrogate_in_jsonl_is_refused_with_its_line(api_alice):
    body = b'{"name": "ann"}\n{"name": "b\\ud800b"}\n'
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", "\\ud800", "name")
    assert "lone surrogate" in first["message"]


def test_an_emoji_as_an_escaped_pair_still_reads(api_alice):
    body = b'{"name": "\\ud83d\\ude00 ann"}\n'
    response = validate_file(api_alice, body, "in.jsonl")
    assert response.status_code == 200 and response.json()["valid"] is True, response.json()
    assert response.json()["preview"][0]["name"] == "\N{GRINNING FACE} ann"


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
@pytest.mark.parametrize(
    "rows", ['[{"name": "a"}, {"name": "\\udc00"}]', '[{"name": "a"}, {"\\ud800": "x"}]']
)
def test_lone_surrogate_in_rows_is_a_400(api_alice, path, rows):
    body = '{"processor": "template", "params": {"template": "{name}"}, "rows": ' + rows + "}"
    response = api_alice.post(f"{API}/{path}", body, content_type="application/json")
    error = assert_error(response, 400, "invalid_request")
    assert "rows[1]" in error["message"] and "lone surrogate" in error["message"]
    assert Job.objects.count() == 0


def test_lone_surrogate_in_params_is_a_400_and_makes_no_job(api_alice):
    response = create_file(api_alice, b"name\nann\n", params='{"template": "\\ud800"}')
    error = assert_error(response, 400, "invalid_request")
    assert "params" in error["message"] and "\\ud800" in error["message"]
    body = '{"processor": "template", "params": {"template": "\\ud800"}, "rows": [{"a": "1"}]}'
    response = api_alice.post(f"{API}/jobs", body, content_type="application/json")
    assert "template" in assert_error(response, 400, "invalid_request")["message"]
    assert Job.objects.count() == 0
    assert api_alice.get(f"{API}/jobs").status_code == 200


# --- 3. encodings -------------------------------------------------------------------------------


def test_utf8_with_one_stray_byte_is_utf8_and_the_byte_is_named(api_alice):
    lines = ["name,city"] + [f"person{i},Zürich — café" for i in range(50)]
    text = "\n".join(lines).encode()
    at = text.index(b"person7,") + len("person7,Z")
    body = text[:at] + b"\xff" + text[at:] + b"\n"
    first = assert_refused_file(api_alice, body, "in.csv", 9, "Line 9", "utf-8", "0xFF")
    assert "character 10" in first["message"]


def test_jsonl_utf8_with_one_stray_byte_is_not_read_as_cp1252(api_alice):
    lines = [
        json.dumps({"name": f"Zoë {i}", "city": "Köln"}, ensure_ascii=False) for i in range(40)
    ]
    body = "\n".join(lines).encode() + b'\n{"name": "x\x81y"}\n'
    assert_refused_file(api_alice, body, "in.jsonl", 41, "Line 41", "utf-8")


def test_utf8_after_a_cp1252_start_is_refused_with_its_line(api_alice):
    head = "name,city\n" + "".join(f"p{i},Café\n" for i in range(8000))
    tail = "".join(f"q{i},Zürich\n" for i in range(100))
    body = head.encode("cp1252") + tail.encode("utf-8")
    assert len(head) > 64 * 1024  # the UTF-8 part is past the detection sample
    first = assert_refused_file(api_alice, body, "in.csv", 8002, "Line 8002", "UTF-8")
    assert "mixes encodings" in first["message"]


def test_one_utf8_character_then_one_stray_byte_names_the_byte_not_the_start(api_alice):
    # One é near the start and one bad byte thousands of lines on: the file was read as cp1252
    # and refused for "line 2 is UTF-8 text, but the start of the file is not".
    lines = ["id,name", "1,café", *(f"{i},plain" for i in range(3, 3002))]
    body = "\n".join(lines).encode() + b"\n3002,bad \xff\n"
    first = assert_refused_file(api_alice, body, "in.csv", 3002, "Line 3002", "utf-8", "0xFF")
    assert "start of the file" not in first["message"]


def test_plain_cp1252_file_still_reads(api_alice):
    body = "name,city\nann,Café\nbob,Köln\n".encode("cp1252")
    report = validate_file(api_alice, body).json()
    assert report["valid"] is True, report
    assert report["encoding"] == "cp1252"
    assert report["preview"][0]["city"] == "Café"


# --- 5/6. enormous lines and decompression bombs ---------------------------------------------


def _refused_fast(client, body: bytes, name: str, *words: str) -> tuple[float, dict]:
    started = time.monotonic()
    response = create_file(client, body, name)
    elapsed = time.monotonic() - started
    error = assert_error(response, 400, "invalid_csv")
    first = error["details"]["errors"][0]
    for word in words:
        assert word in first["message"], first
    assert Job.objects.count() == 0
    return elapsed, first


def test_a_300_mb_csv_line_is_refused_fast(api_alice):
    body = _bomb(b"x" * (1 << 20), 300, head=b"name,text\nann,hi\n", tail=b"\n")
    assert len(body) < 1 << 20
    elapsed, first = _refused_fast(api_alice, body, "in.csv.gz", "Line 3 is longer than")
    assert first["line"] == 3
    assert elapsed < 5, elapsed


def test_a_300_mb_jsonl_line_is_refused_fast(api_alice):
    body = _bomb(b"x" * (1 << 20), 300, head=b'{"name": "ann"}\n{"name": "', tail=b'"}\n')
    elapsed, first = _refused_fast(api_alice, body, "in.jsonl.gz", "Line 2 is longer than")
    assert first["line"] == 2
    assert elapsed < 5, elapsed


def test_a_gigabyte_of_blank_lines_is_refused_fast(api_alice):
    body = _bomb(b"\n" * (1 << 20), 1100, head=b"name,text\nann,hi\n")
    assert len(body) < 2 << 20
    elapsed, first = _refused_fast(api_alice, body, "in.csv.gz", "more than 1,000,000 blank")
    assert elapsed < 5, elapsed


def test_a_gigabyte_of_long_rows_is_refused_at_the_decompressed_limit(api_alice, settings):
    # Too big rather than broken: the 413 of an upload over the size limit.
    row = b"x" * 100_000 + b"\n"
    body = _bomb(row * 10, 1100, head=b"name\n")
    started = time.monotonic()
    response = create_file(api_alice, body, "in.csv.gz")
    elapsed = time.monotonic() - started
    error = assert_error(response, 413, "file_too_large")
    assert "decompresses to more than 100.0 MB" in error["message"]
    assert error["details"] == {"max_decompressed_bytes": settings.BATCHHUB_MAX_DECOMPRESSED_BYTES}
    assert Job.objects.count() == 0
    assert elapsed < 5, elapsed


def test_blank_lines_past_the_row_limit_stop_reading(api_alice, settings):
    settings.BATCHHUB_MAX_ROWS = 1000
    body = b"name\nann\n" + b"\n" * 5000 + b"bob\n"
    first = assert_refused_file(api_alice, body, "in.csv", 1003, "blank lines")
    assert "1,000" in first["message"]


def test_bad_jsonl_lines_past_the_row_limit_stop_reading(api_alice, settings):
    settings.BATCHHUB_MAX_ROWS = 1000
    body = b'{"name": "ann"}\n' + b"1\n" * 5000
    response = create_file(api_alice, body, "in.jsonl")
    error = assert_error(response, 400, "invalid_csv")
    assert any("blank or not rows" in e["message"] for e in error["details"]["errors"])
    assert Job.objects.count() == 0


# --- 12. smaller ones -------------------------------------------------------------------------


def test_nul_byte_in_the_sample_names_its_line(api_alice):
    body = b"name,text\nann,hi\nbob,h\x00i\n"
    first = assert_refused_file(api_alice, body, "in.csv", 3, "Line 3", "NUL", "character 6")
    assert first["line"] == 3


def test_rows_error_is_a_sentence_not_a_python_repr(api_alice):
    body = {"processor": "template", "params": {"template": "{name}"}, "rows": [{"name": "a"}, 5]}
    response = api_alice.post(f"{API}/jobs", body, format="json")
    error = assert_error(response, 400, "invalid_request")
    assert "ErrorDetail" not in error["message"] and "{" not in error["message"]
    assert error["message"].startswith("rows[1]: "), error["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("concurrency", 100_000), ("rate_limit", 0), ("max_attempts", 50)],
)
def test_validate_refuses_what_create_refuses(api_alice, settings, field, value):
    rows = {"processor": "template", "params": {"template": "{name}"}, "rows": [{"name": "a"}]}
    created = api_alice.post(f"{API}/jobs", {**rows, field: value}, format="json")
    checked = api_alice.post(f"{API}/jobs/validate", {**rows, field: value}, format="json")
    assert_error(created, 400, "invalid_request")
    error = assert_error(checked, 400, "invalid_request")
    assert field in error["message"]
    assert Job.objects.count() == 0


def test_checking_an_upload_stops_at_its_deadline(api_alice, settings):
    settings.BATCHHUB_VALIDATE_SECONDS = 0  # every read is past it
    body = b"name\n" + b"ann\n" * 50_000
    first = assert_refused_file(api_alice, body, "in.csv", 1, "took longer than the time allowed")
    assert "line 1" in first["message"]


def test_a_long_string_before_deep_nesting_is_located_fast(api_alice):
    body = b'{"name": "ann"}\n{"s": "' + b"x" * 4_000_000 + b'", "name": ' + DEEP.encode() + b"}\n"
    started = time.monotonic()
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", "nested")
    assert first["column"] == 1
    assert time.monotonic() - started < 5


def test_an_empty_file_is_invalid_input_like_any_other(api_alice):
    # It was DRF's field error (invalid_request, details.file), and validate answered 400.
    first = assert_refused_file(api_alice, b"", "in.csv", None, "The file is empty")
    assert first["column"] is None


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
def test_a_chunked_body_is_411_not_a_missing_field(api_alice, path):
    # Django reads no further than Content-Length: a chunked body read as empty, and the answer
    # was "processor: This field is required" / "No file was submitted".
    response = api_alice.generic(
        "POST",
        f"{API}/{path}",
        b"",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert_error(response, 411, "length_required")
    assert Job.objects.count() == 0


def test_an_integer_too_long_to_read_names_its_line_and_column(api_alice):
    # Python's own message advised an interpreter setting and named no column.
    body = b'{"name": "ann"}\n{"id": 7, "name": ' + b"9" * 5_000 + b"}\n"
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", "4,300 digits")
    assert first["column"] == 1  # the column "name", the first one line 1 named
    assert "set_int_max_str_digits" not in first["message"]


def test_an_integer_too_long_in_rows_is_a_400_naming_the_row(api_alice):
    body = '{"processor": "template", "params": {"template": "{n}"}, "rows": [{"n": ' + "9" * 5_000
    response = api_alice.post(f"{API}/jobs", body + "}]}", content_type="application/json")
    error = assert_error(response, 400, "invalid_request")
    assert "4,300 digits at rows[0].n" in error["message"], error["message"]
    assert "set_int_max_str_digits" not in error["message"]


def test_jsonl_that_is_not_utf8_is_refused_naming_the_byte(api_alice):
    # Read as cp1252 it ran, its cell "\xff\xfe" turned into "ÿþ".
    body = b'{"name": "ann"}\n{"name": "b\xff\xfe"}\n'
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", "utf-8", "0xFF")
    assert "character 12" in first["message"]


# --- a key given twice in one object --------------------------------------------------------------
# Parsing keeps the last value of a repeated key: the first was dropped without a word.


def test_a_repeated_key_in_jsonl_is_refused_naming_line_and_column(api_alice):
    body = b'{"name": "ann", "n": 1}\n{"n": 2, "name": "first", "name": "second"}\n'
    first = assert_refused_file(api_alice, body, "in.jsonl", 2, "Line 2", '"name" twice')
    assert first["column"] == 1  # the column "name"


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
def test_a_repeated_key_in_rows_is_a_400_naming_the_row(api_alice, path):
    body = (
        '{"processor": "template", "params": {"template": "{name}"}, '
        '"rows": [{"name": "a"}, {"name": "first", "name": "second"}]}'
    )
    response = api_alice.post(f"{API}/{path}", body, content_type="application/json")
    error = assert_error(response, 400, "invalid_request")
    assert 'has the key "name" twice in one object at rows[1]' in error["message"]
    assert Job.objects.count() == 0


def test_a_repeated_field_in_a_json_body_is_a_400(api_alice):
    # Which processor ran depended on the order of two fields the client may not know it sent.
    body = (
        '{"processor": "template", "processor": "wordcount", '
        '"params": {"template": "{name}"}, "rows": [{"name": "a"}]}'
    )
    response = api_alice.post(f"{API}/jobs", body, content_type="application/json")
    error = assert_error(response, 400, "invalid_request")
    assert '"processor" twice' in error["message"]
    assert Job.objects.count() == 0


def test_a_repeated_key_in_the_params_string_is_a_400(api_alice):
    params = '{"template": "{name}", "template": "{other}"}'
    response = create_file(api_alice, b"name\nann\n", "in.csv", params=params)
    error = assert_error(response, 400, "invalid_request")
    assert '"template" twice' in error["message"]
    assert Job.objects.count() == 0


# --- a body compressed as a whole (Content-Encoding) ----------------------------------------------
# No parser unpacked it: gzip JSON was "not valid utf-8 text", a gzip form "missing" every field,
# and a body labelled br but sent plain was read as if the label were not there.

ROWS_BODY = '{"processor": "template", "params": {"template": "{name}"}, "rows": [{"name": "a"}]}'


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
@pytest.mark.parametrize("coding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_json_body_is_415_naming_the_coding(api_alice, path, coding):
    body = gzip.compress(ROWS_BODY.encode()) if coding == "gzip" else ROWS_BODY.encode()
    response = api_alice.post(
        f"{API}/{path}", body, content_type="application/json", HTTP_CONTENT_ENCODING=coding
    )
    error = assert_error(response, 415, "unsupported_media_type")
    assert f"Content-Encoding: {coding}" in error["message"]
    assert response["Accept-Encoding"] == "identity"
    assert Job.objects.count() == 0


def test_a_compressed_multipart_body_is_415(api_alice):
    fields = {"file": upload(b"name\nann\n", "in.csv"), "processor": "template", "params": TEMPLATE}
    body = encode_multipart(BOUNDARY, fields)
    response = api_alice.generic(
        "POST",
        f"{API}/jobs",
        gzip.compress(body),
        content_type=MULTIPART_CONTENT,
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert_error(response, 415, "unsupported_media_type")
    assert Job.objects.count() == 0


def test_identity_coding_is_read_as_plain(api_alice):
    response = api_alice.post(
        f"{API}/jobs/validate",
        ROWS_BODY,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="identity",
    )
    assert response.status_code == 200
    assert response.json()["valid"] is True


def test_other_json_bodies_refuse_a_compressed_body_too(api_alice):
    body = gzip.compress(b'{"name": "ci"}')
    response = api_alice.post(
        f"{API}/keys", body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert_error(response, 415, "unsupported_media_type")


# --- a charset that is a codec but no text encoding ----------------------------------------------
# Django takes any codec Python knows as the charset: charset=zlib unpacked a small body into
# hundreds of megabytes of text before it was parsed, and the escape codecs rewrote it.

NOT_TEXT = ["zlib", "bz2", "base64", "hex", "uu", "rot13", "unicode_escape", "raw_unicode_escape"]


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
@pytest.mark.parametrize("charset", NOT_TEXT)
def test_a_json_body_in_a_codec_that_is_not_text_is_415(api_alice, path, charset):
    body = codecs.encode(ROWS_BODY.encode(), charset) if charset in ("zlib", "bz2") else ROWS_BODY
    response = api_alice.post(
        f"{API}/{path}", body, content_type=f"application/json; charset={charset}"
    )
    error = assert_error(response, 415, "unsupported_media_type")
    assert f"charset={charset}" in error["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("charset", ["zlib", "unicode_escape"])
def test_a_multipart_or_form_body_in_a_codec_that_is_not_text_is_415(api_alice, charset):
    fields = {"file": upload(b"name\nann\n", "in.csv"), "processor": "template", "params": TEMPLATE}
    response = api_alice.generic(
        "POST",
        f"{API}/jobs",
        encode_multipart(BOUNDARY, fields),
        content_type=f"{MULTIPART_CONTENT}; charset={charset}",
    )
    assert_error(response, 415, "unsupported_media_type")
    response = api_alice.generic(
        "POST",
        f"{API}/keys",
        b"name=ci",
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
    )
    assert_error(response, 415, "unsupported_media_type")
    assert Job.objects.count() == 0


def test_a_page_form_in_a_codec_that_is_not_text_is_415_not_500(client_alice):
    body = encode_multipart(BOUNDARY, {"processor": "template", "file": upload(b"a\n", "a.csv")})
    response = client_alice.generic(
        "POST", "/jobs/new/", body, content_type=f"{MULTIPART_CONTENT}; charset=zlib"
    )
    assert response.status_code == 415
    assert b"charset=zlib" in response.content
    assert Job.objects.count() == 0


@pytest.mark.parametrize("charset", ["latin-1", "utf-16"])
def test_a_json_body_in_a_text_charset_is_read_in_it(api_alice, charset):
    body = ROWS_BODY.replace('"a"', '"é"').encode(charset)
    response = api_alice.post(
        f"{API}/jobs/validate", body, content_type=f"application/json; charset={charset}"
    )
    assert response.status_code == 200, response.content
    assert response.json()["valid"] is True


# --- a JSONL row longer than the detection sample -------------------------------------------------
# The sample's "first line longer than 64 KB" was meant for a CSV header: it refused a JSONL file
# whose first row was long ("does not look like a CSV or JSONL file") and took the same rows the
# other way round.


@pytest.mark.parametrize("name", ["in.jsonl", "in.txt"])
def test_a_long_first_jsonl_row_reads_like_a_long_later_one(api_alice, name):
    long_row = json.dumps({"name": "x" * 100_000}).encode() + b"\n"
    short_row = b'{"name": "ann", "n": 1}\n'
    for body in (long_row + short_row, short_row + long_row):
        report = validate_file(api_alice, body, name).json()
        assert report["valid"] is True, report["errors"]
        assert report["row_count"] == 2
        assert report["columns"] in (["name", "n"], ["name"]) and "name" in report["columns"]
        assert report["format"] == "jsonl"
    response = create_file(api_alice, long_row + short_row, name)
    assert response.status_code == 201, response.content[:300]
    job = Job.objects.get()
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.total == 2
    assert job.columns == ["name", "n"]


def test_a_jsonl_first_row_over_the_row_limit_is_refused_naming_line_1(api_alice):
    body = json.dumps({"name": "x" * 9_000_000}).encode() + b"\n" + b'{"name": "ann"}\n'
    first = assert_refused_file(api_alice, body, "in.jsonl", 1, "Line 1 is longer than")
    assert "does not look like" not in first["message"]


# --- the column of a bad byte or NUL in a CSV -----------------------------------------------------
# The message said "at character 10" of the line, and `column` was null: the field is known.


def _csv_rows(start: int, count: int) -> bytes:
    return "".join(f"{i},hello {i},x\n" for i in range(start, start + count)).encode()


def test_a_bad_byte_deep_in_a_csv_names_its_line_and_column(api_alice):
    body = b"id,name,c\n" + _csv_rows(0, 79_999) + b"79999,caf\xe9,x\n" + _csv_rows(80_000, 20_000)
    first = assert_refused_file(api_alice, body, "in.csv", 80_001, "0xE9")
    assert first["column"] == 2


def test_a_nul_in_a_quoted_field_spanning_lines_names_its_column(api_alice):
    body = b"id,name,c\n" + _csv_rows(0, 5_000) + b'9,"two\nlines",x\x00y\n' + _csv_rows(0, 5)
    first = assert_refused_file(api_alice, body, "in.csv", 5_003, "NUL")
    assert first["column"] == 3


@pytest.mark.parametrize(("body", "column"), [(b"a;b\n1;x\x00\n", 2), (b"a,b\n\x001,x\n", 1)])
def test_a_nul_near_the_start_names_its_column(api_alice, body, column):
    first = assert_refused_file(api_alice, body, "in.csv", 2, "NUL")
    assert first["column"] == column


def test_a_quote_never_closed_near_the_end_names_its_line_and_column(api_alice):
    body = b"id,name,c\n" + _csv_rows(0, 99_997) + b'99998,"never closed\n' + _csv_rows(0, 1)
    first = assert_refused_file(api_alice, body, "in.csv", 99_999, "never closed")
    assert first["column"] == 2


def test_a_quote_never_closed_after_a_field_spanning_lines_names_its_column(api_alice):
    body = b"id,name,c\n" + _csv_rows(0, 10) + b'1,"two\nlines","open\n' + _csv_rows(0, 2)
    first = assert_refused_file(api_alice, body, "in.csv", 12, "never closed")
    assert first["column"] == 3


# --- the first row's keys meet the checks every later key meets -----------------------------------
# Detection took the columns from the first row, which then matched them as they were: a first
# row of a hundred thousand keys passed the column limit, and a key with no name passed too.


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
def test_a_first_row_over_the_column_limit_is_refused(api_alice, settings, path):
    settings.BATCHHUB_MAX_COLUMNS = 20
    row = {**{f"k{i}": 1 for i in range(50)}, "name": "a"}
    body = {"processor": "template", "params": {"template": "{name}"}, "rows": [row]}
    response = api_alice.post(f"{API}/{path}", body, format="json")
    if path == "jobs":
        error = assert_error(response, 400, "invalid_csv")
        first = error["details"]["errors"][0]
    else:
        first = response.json()["errors"][0]
    assert first["line"] == 1 and first["column"] == 21
    assert "over the limit of 20" in first["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("key", ["", "  "])
def test_a_first_jsonl_row_with_a_key_with_no_name_is_refused(api_alice, key):
    body = json.dumps({key: "a", "name": "b"}).encode() + b'\n{"name": "c"}\n'
    assert_refused_file(api_alice, body, "in.jsonl", 1, "Line 1 has a key with no name")


def test_a_bad_byte_far_into_a_file_counts_every_row_before_it(api_alice):
    # The check read a block at a time and lost the rows of the block before the byte: a file
    # whose line 80,001 held one was "77,692 rows".
    lines = ["id,name,city"] + [f"{i},person {i},Zürich" for i in range(1, 80_000)]
    body = ("\n".join(lines) + "\n").encode() + b"80000,bad \xff byte,x\n"
    report = validate_file(api_alice, body).json()
    assert report["row_count"] == 79_999
    first = report["errors"][0]
    assert (first["line"], first["column"]) == (80_001, 2), first
    assert "0xFF at character 11" in first["message"]


@pytest.mark.parametrize(("line", "column"), [(b'3,"ab"x,y', 2), (b"3,y," + b"z" * 140_000, 3)])
def test_text_after_a_quote_and_an_over_long_field_name_their_column(api_alice, line, column):
    body = b"id,name,city\n1,ann,x\n2,bob,y\n" + line + b"\n"
    first = assert_refused_file(api_alice, body, "in.csv", 4)
    assert first["column"] == column, first


@pytest.mark.parametrize("path", ["jobs", "jobs/validate"])
@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_a_body_cut_short_of_its_content_length_says_so(api_alice, path, kind):
    # A dropped connection reads as the body's end: a cut multipart body was "No file was
    # submitted" (its file part never closed), a cut JSON body a parse error at its end.
    if kind == "multipart":
        rows = b"name\n" + b"".join(b"person%d\n" % i for i in range(1000))
        fields = {"processor": "template", "params": TEMPLATE, "file": upload(rows)}
        body = encode_multipart(BOUNDARY, fields)
        content_type = MULTIPART_CONTENT
    else:
        rows = [{"name": f"person{i}"} for i in range(1000)]
        body = json.dumps({"processor": "template", "params": {}, "rows": rows}).encode()
        content_type = "application/json"
    response = api_alice.generic(
        "POST",
        f"{API}/{path}",
        b"",
        content_type=content_type,
        CONTENT_LENGTH=str(len(body)),
        **{"wsgi.input": io.BytesIO(body[: len(body) - 4000])},
    )
    error = assert_error(response, 400, "invalid_request")
    assert f"ended after {len(body) - 4000:,} of the {len(body):,} bytes" in error["message"]
    assert Job.objects.count() == 0
