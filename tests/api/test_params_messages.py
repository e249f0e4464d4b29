"""A refused param is named in a short sentence, never echoed back whole.

The schema's own messages quote the value: a 5 MB template came back twice (message and
details) in a 10 MB answer.
"""

from __future__ import annotations

import json

import pytest

from jobs.models import Job

from .conftest import assert_error, create_form, create_json

pytestmark = pytest.mark.django_db


def test_a_template_over_its_length_is_a_short_400(api_alice):
    response = create_json(api_alice, [{"a": "1"}], params={"template": "{a}" + "x" * 2_000_000})
    error = assert_error(response, 400, "invalid_request")
    assert len(response.content) < 2_000
    assert error["message"] == (
        "params.template: is 2,000,003 characters long; at most 10,000 are allowed."
    )
    assert Job.objects.count() == 0


def test_many_unknown_params_are_a_short_400(api_alice):
    params = {"template": "{a}", **{f"extra_{i}": i for i in range(20_000)}}
    response = create_form(api_alice, "a\n1\n", params=params)
    error = assert_error(response, 400, "invalid_request")
    assert len(response.content) < 2_000
    assert "Additional properties are not allowed" in error["message"]


def test_a_long_value_of_the_wrong_kind_is_quoted_short(api_alice):
    params = {"url": "x" * 100_000, "method": "NOPE" * 10_000}
    response = create_json(api_alice, [{"a": "1"}], processor="http", params=params)
    error = assert_error(response, 400, "invalid_request")
    assert len(json.dumps(error)) < 2_000
    assert "is not one of" in json.dumps(error["details"])
