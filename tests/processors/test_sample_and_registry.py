from __future__ import annotations

import time

import pytest
from jsonschema import Draft202012Validator

from jobs.processors import builtin_processors
from jobs.processors.base import ParamsError, get_processor_class
from jobs.sample import run_sample

NEW_BUILTINS = {"llm", "http", "scrape", "language", "extract"}


def test_builtins_are_registered_and_fully_described():
    names = {cls.name for cls in builtin_processors()}
    assert NEW_BUILTINS <= names
    for name in NEW_BUILTINS:
        cls = get_processor_class(name)
        described = cls.describe()
        assert described["title"] and len(described["description"]) > 40
        schema = described["params_schema"]
        Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False
        for param, spec in schema["properties"].items():
            assert spec.get("description"), f"{name}.{param} has no description"


def test_sample_runs_io_rows_concurrently_within_the_timeout(echo_server):
    rows = [{"n": i} for i in range(25)]
    params = {"url": echo_server.url + "/echo/{n}", "fields": {"path": "path"}, "timeout": 0.5}
    started = time.monotonic()
    result = run_sample("http", params, rows, limit=10)
    assert time.monotonic() - started < 2
    assert [r["row"] for r in result] == list(range(1, 11))
    assert result[3] == {"row": 4, "input": {"n": 3}, "output": {"path": "/echo/3"}, "error": None}
    assert len(echo_server.requests) == 10


def test_sample_bounds_slow_services(echo_server):
    params = {"url": echo_server.url + "/slow", "timeout": 5}
    started = time.monotonic()
    result = run_sample("http", params, [{}, {}], timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert all(
        r["output"] is None and "Did not finish within the sample's 0.3 s" in r["error"]
        for r in result
    )


def test_sample_reports_row_errors_and_retries(echo_server):
    params = {"url": echo_server.url + "/status/{code}", "timeout": 0.5}
    result = run_sample("http", params, [{"code": 404}, {"code": 429}])
    assert result[0]["error"].startswith("The API answered 404")
    assert result[1]["error"].endswith("(the job would retry this row)")


def test_sample_cpu_processor_with_column_map():
    result = run_sample(
        "extract",
        {"kinds": ["emails"]},
        [{"body": "write to a@example.com"}, {"other": 1}],
        column_map={"text": "body"},
    )
    assert result[0]["output"] == {"emails": "a@example.com"}
    assert result[1]["error"] == "The input has no column 'body'."


def test_sample_rejects_unknown_processor_and_bad_params():
    with pytest.raises(ParamsError, match="Unknown processor"):
        run_sample("nope", {}, [{}])
    with pytest.raises(ParamsError, match="params.url"):
        run_sample("http", {"url": "ftp://x"}, [{}])
