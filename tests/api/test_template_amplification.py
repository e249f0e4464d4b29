"""A template may not turn a small row into an enormous output.

A width of a billion, or one long cell named a thousand times, would make each row's output a
gigabyte: the worker ran out of memory and the row stayed running. The first is refused when
the job is created; the second fails only the rows it would blow up.
"""

from __future__ import annotations

import pytest

from jobs.models import Job, JobStatus
from tests.conftest import drive

from .conftest import API, assert_error, create_form, create_json

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("spec", [">999999999", "099999999", ".999999999f", "x^1001"])
def test_a_huge_width_or_precision_is_a_400_naming_the_template(api_alice, spec):
    response = create_form(api_alice, "name\nann\n", params={"template": f"{{name:{spec}}}"})
    error = assert_error(response, 400, "invalid_request")
    assert "params.template" in error["message"]
    assert "more than 1000 characters" in error["message"]
    assert Job.objects.count() == 0


def test_a_huge_width_in_an_http_body_is_refused_too(api_alice, settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    params = {"url": "http://127.0.0.1:9/", "method": "POST", "body": {"q": "{name:>999999999}"}}
    response = create_json(api_alice, [{"name": "ann"}], processor="http", params=params)
    error = assert_error(response, 400, "invalid_request")
    assert "params.body" in error["message"] and "1000" in error["message"]


@pytest.mark.parametrize("spec", ["", ">10", "^1000", ".3", "08.2f"])
def test_ordinary_widths_still_work(api_alice, spec):
    response = create_form(api_alice, "name\nann\n", params={"template": f"{{name:{spec}}}"})
    assert response.status_code == 201, response.content[:300]


def test_a_long_cell_repeated_fails_its_row_not_the_worker(api_alice, settings):
    settings.BATCHHUB_MAX_ROW_BYTES = 10_000
    long = "x" * 1_000
    text = f"name,note\nann,short\nbob,{long}\ncid,fine\n"
    response = create_form(api_alice, text, params={"template": "{note}" * 20})
    assert response.status_code == 201, response.content[:300]
    job = drive(Job.objects.get())
    assert job.status == JobStatus.PARTIAL
    assert (job.counts["succeeded"], job.counts["failed"]) == (2, 1)
    rows = api_alice.get(f"{API}/jobs/{job.public_id}/rows?status=failed").json()["results"]
    assert [r["row"] for r in rows] == [2]
    assert "20,000 characters" in rows[0]["error"]
    assert "column 'note' is used 20 times" in rows[0]["error"]


def test_an_http_or_llm_template_repeating_a_long_cell_fails_the_row(settings):
    from jobs.processors import _httpclient
    from jobs.processors.base import RowError

    settings.BATCHHUB_MAX_ROW_BYTES = 10_000
    assert _httpclient.fill("{a}-{a}", {"a": "x" * 1_000}) == "x" * 1_000 + "-" + "x" * 1_000
    with pytest.raises(RowError, match="20,000 characters"):
        _httpclient.fill("{a}" * 20, {"a": "x" * 1_000})
