"""A job's options beyond what their columns hold are a 400 naming the option, never a 500."""

from __future__ import annotations

import pytest

from jobs.models import Job

from .conftest import API, assert_error, create_form, create_json

pytestmark = pytest.mark.django_db

TOO_MANY = [2_147_483_648, 10**20]


@pytest.mark.parametrize("rate", TOO_MANY)
def test_a_rate_limit_over_the_column_is_a_400_in_json(api_alice, rate):
    error = assert_error(
        create_json(api_alice, [{"name": "ann"}], rate_limit=rate), 400, "invalid_request"
    )
    assert "rate_limit" in error["message"] and "2147483647" in error["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("rate", TOO_MANY)
def test_a_rate_limit_over_the_column_is_a_400_in_multipart(api_alice, rate):
    error = assert_error(
        create_form(api_alice, "name\nann\n", rate_limit=str(rate)), 400, "invalid_request"
    )
    assert "rate_limit" in error["details"]
    assert Job.objects.count() == 0


def test_validate_refuses_it_too(api_alice):
    body = {"processor": "template", "params": {"template": "{name}"}, "rows": [{"name": "a"}]}
    response = api_alice.post(f"{API}/jobs/validate", {**body, "rate_limit": 10**20}, format="json")
    assert_error(response, 400, "invalid_request")


def test_the_largest_rate_limit_is_kept(api_alice):
    response = create_json(api_alice, [{"name": "ann"}], rate_limit=2_147_483_647)
    assert response.status_code == 201, response.content[:300]
    assert response.json()["rate_limit"] == 2_147_483_647
