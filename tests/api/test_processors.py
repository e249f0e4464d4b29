"""GET /processors and /processors/{name}."""

from __future__ import annotations

import pytest

from jobs.processors import all_processors

from .conftest import API, assert_error

pytestmark = pytest.mark.django_db


def test_list_describes_every_processor_unpaginated(api_alice):
    response = api_alice.get(f"{API}/processors")

    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert [p["name"] for p in body] == [cls.name for cls in all_processors()]
    sentiment = next(p for p in body if p["name"] == "sentiment")
    assert set(sentiment) >= {"name", "title", "description", "inputs", "outputs", "params_schema"}
    assert sentiment["inputs"] == ["text"]
    assert sentiment["outputs"] == ["sentiment_label", "sentiment_score"]
    assert sentiment["params_schema"]["properties"]["threshold"]["default"] == 0.05


def test_one_processor(api_alice):
    body = api_alice.get(f"{API}/processors/template").json()
    assert body["name"] == "template"
    assert "template" in body["params_schema"]["required"]


def test_unknown_processor_is_404(api_alice):
    assert_error(api_alice.get(f"{API}/processors/nope"), 404, "not_found")


def test_processors_need_authentication(client):
    assert_error(client.get(f"{API}/processors"), 401, "not_authenticated")
