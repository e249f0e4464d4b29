from __future__ import annotations

import json
import time

import pytest

from jobs.processors.base import ParamsError, ProcessorContext
from jobs.processors.http_api import HTTPProcessor
from tests.support.dripping import Dripping

from .conftest import make_row


def http(**params):
    return HTTPProcessor({"timeout": 0.5, **params}, context=ProcessorContext(concurrency=4))


def test_templated_url_body_and_headers(echo_server, monkeypatch):
    monkeypatch.setenv("ECHO_TOKEN", "s3cret-token")
    proc = http(
        method="POST",
        url=echo_server.url + "/echo/users/{user_id}?q={query}",
        headers={"X-Customer": "{customer_id}", "Authorization": {"$env": "ECHO_TOKEN"}},
        body={"name": "{name}", "count": "{count}", "note": "hello {name}", "tags": ["{city}", 1]},
        fields={
            "method": "method",
            "path": "path",
            "q": "query.q",
            "sent": "json",
            "customer": "headers.x-customer",
        },
    )
    row = {
        "user_id": "a/b 1",
        "query": "café & tea",
        "name": "Zoë",
        "count": 3,
        "city": "Paris",
        "customer_id": "c-42",
    }
    result = proc.run_one(make_row(row))
    assert result.error is None, result.error
    out = result.output
    assert out["method"] == "POST"
    assert out["path"] == "/echo/users/a%2Fb%201"  # placeholders are URL-encoded
    assert out["q"] == "café & tea"
    assert json.loads(out["sent"]) == {
        "name": "Zoë",
        "count": 3,
        "note": "hello Zoë",
        "tags": ["Paris", 1],
    }
    assert out["customer"] == "c-42"
    bad = proc.run_one(make_row({**row, "customer_id": "Zoë"}))
    assert (
        bad.error
        == "The header X-Customer would contain non-ASCII characters; HTTP headers are ASCII."
    )
    assert echo_server.requests[0]["headers"]["authorization"] == "s3cret-token"
    assert echo_server.requests[0]["headers"]["user-agent"].startswith("BatchHub/")


def test_dotted_paths_into_lists(echo_server):
    proc = http(
        url=echo_server.url + "/items",
        fields={
            "first": "data.items.0.name",
            "second": "data.items.1.name",
            "tags": "data.items.0.tags",
            "missing": "data.items.5.name",
            "count": "data.count",
        },
    )
    assert proc.output_columns() == ["first", "second", "tags", "missing", "count"]
    result = proc.run_one(make_row({}))
    assert result.output == {
        "first": "first",
        "second": "second",
        "tags": '["a","b"]',
        "missing": None,
        "count": 2,
    }


def test_default_output_is_status_and_truncated_body(echo_server):
    proc = http(url=echo_server.url + "/text", max_body_chars=5)
    assert proc.output_columns() == ["status_code", "body"]
    assert proc.run_one(make_row({})).output == {"status_code": 200, "body": "plain"}


def test_whole_url_from_a_column_without_encoding(echo_server):
    proc = http(url="{link}", url_encode=False, fields={"path": "path"})
    assert proc.run_one(make_row({"link": echo_server.url + "/echo/x"})).output == {
        "path": "/echo/x"
    }
    assert "not an http(s) URL" in proc.run_one(make_row({"link": "file:///etc/passwd"})).error


def test_404_is_a_row_error_with_status(echo_server):
    result = http(url=echo_server.url + "/status/404").run_one(make_row({}))
    assert not result.retry
    assert result.error == 'The API answered 404 Not Found: {"error": "no such user"}'
    # The body is the row's own; the status is what rows failing alike share.
    assert result.reason == "The API answered 404 Not Found"


def test_429_is_rate_limited_with_retry_after(echo_server):
    result = http(url=echo_server.url + "/status/429").run_one(make_row({}))
    assert result.retry and result.rate_limited and result.retry_after == 3


def test_503_is_retried_honouring_an_http_date(echo_server):
    result = http(url=echo_server.url + "/status/503").run_one(make_row({}))
    assert result.retry and not result.rate_limited
    assert 110 <= result.retry_after <= 121


def test_timeout_is_retryable(echo_server):
    result = http(url=echo_server.url + "/slow", timeout=0.2).run_one(make_row({}))
    assert result.retry and "timed out" in result.error
    assert result.reason == result.error == "The API timed out (ReadTimeoutError)"


def test_fields_on_a_non_json_answer_is_a_row_error(echo_server):
    result = http(url=echo_server.url + "/text", fields={"a": "b"}).run_one(make_row({}))
    assert "not JSON" in result.error and not result.retry


def test_fields_on_a_deeply_nested_answer_is_a_row_error_not_a_crash(echo_server):
    result = http(url=echo_server.url + "/deep", fields={"a": "a"}).run_one(make_row({}))
    assert "not JSON" in result.error and not result.retry


@pytest.mark.parametrize(
    "params, message",
    [
        ({"url": "ftp://example.com/{x}"}, "params.url"),
        ({"url": "https://example.com/{x.y}"}, "params.url"),
        ({"url": "https://example.com/", "method": "GET", "body": {"a": 1}}, "params.body"),
        ({"url": "https://example.com/", "headers": {"Bad Header": "x"}}, "params.headers"),
        (
            {"url": "https://example.com/", "headers": {"X": {"$env": "lower-case-ok?"}}},
            "params.headers",
        ),
        ({"url": "https://example.com/", "fields": {"a": "data..x"}}, "params.fields"),
        ({"url": "https://example.com/", "bogus": 1}, "Additional properties"),
    ],
)
def test_bad_params(params, message):
    with pytest.raises(ParamsError) as info:
        HTTPProcessor.validate_params(params)
    assert message in str(info.value)


def test_retry_after_parsing_and_dotted_paths():
    from jobs.processors._httpclient import dotted_get, parse_retry_after

    assert parse_retry_after("12") == 12
    assert parse_retry_after("-5") == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60
    assert parse_retry_after("999999999") == 86_400
    doc = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert dotted_get(doc, "a.b.1.c") == 2 and dotted_get(doc, "a.b.-1.c") == 2
    assert dotted_get(doc, "a.x.c") is None and dotted_get(doc, "a.b.c") is None


def test_half_a_character_in_an_answer_is_replaced_not_a_failed_row(echo_server):
    # A service's answer is nothing the user can fix: the half becomes U+FFFD (it used to fail
    # the sync point's write every time, then was refused as "not JSON").
    proc = http(url=echo_server.url + "/half", fields={"name": "name", "face": "face"})
    result = proc.run_one(make_row({}))
    assert result.error is None, result.error
    assert result.output == {"name": "b\ufffdd", "face": "\N{GRINNING FACE}"}


def test_headers_merge_whatever_their_case(echo_server):
    proc = http(
        method="POST",
        url=echo_server.url + "/echo",
        headers={"user-agent": "my-agent/1", "content-type": "application/merge-patch+json"},
        body={"a": "{a}"},
    )
    assert proc.run_one(make_row({"a": "1"})).error is None
    sent = echo_server.requests[0]["raw_headers"]
    assert [v for k, v in sent if k.lower() == "user-agent"] == ["my-agent/1"]
    assert [v for k, v in sent if k.lower() == "content-type"] == ["application/merge-patch+json"]


def test_an_answer_that_never_ends_is_a_timeout_not_a_row_held_forever():
    # A read timeout bounds each wait for a byte: a server sending one every 0.1 s held the row,
    # and its job, for good.
    site = Dripping(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n"
    )
    try:
        started = time.monotonic()
        result = http(url=site.url, timeout=0.3).run_one(make_row({}))
        took = time.monotonic() - started
    finally:
        site.close()
    assert result.retry and "timed out" in result.error
    assert result.reason == result.error == "The API timed out (ReadTimeoutError)"
    assert took < 3.0, took
