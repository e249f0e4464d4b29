"""The contract's error body for DRF's own errors: auth, 404, 405, throttling, and server errors."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apikeys.models import APIKey
from batchhub import sliding_window
from batchhub.api import GroupRateThrottle
from jobs import services

from .conftest import API, assert_error, create_json

pytestmark = pytest.mark.django_db


def test_no_key_is_401(client):
    error = assert_error(client.get(f"{API}/jobs"), 401, "not_authenticated")
    assert error["details"] is None


def test_an_unknown_key_is_401():
    c = APIClient()
    c.credentials(HTTP_X_API_KEY="bh_nope")
    assert_error(c.get(f"{API}/jobs"), 401, "not_authenticated")


def test_a_bearer_key_works(api_alice):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_alice.raw_key}")
    assert c.get(f"{API}/jobs").status_code == 200


def test_a_session_works_for_reads(client_alice):
    assert client_alice.get(f"{API}/jobs").status_code == 200


def test_a_session_post_needs_csrf(alice):
    c = APIClient(enforce_csrf_checks=True)
    c.force_login(alice)
    response = c.post(
        f"{API}/jobs", {"processor": "template", "rows": [{"name": "a"}]}, format="json"
    )
    assert_error(response, 403, "permission_denied")


def test_an_unknown_url_under_the_api_is_a_contract_404(api_alice):
    error = assert_error(api_alice.get(f"{API}/nothing/here"), 404, "not_found")
    assert error["details"] is None


def test_a_trailing_slash_gets_a_helpful_404(api_alice):
    error = assert_error(api_alice.get(f"{API}/jobs/"), 404, "not_found")
    assert error["details"] == {"path": f"{API}/jobs"}
    assert "trailing slash" in error["message"]


def test_a_wrong_method_is_405(api_alice):
    assert_error(api_alice.delete(f"{API}/jobs"), 405, "method_not_allowed")
    assert_error(api_alice.get(f"{API}/jobs/validate"), 405, "method_not_allowed")


def test_an_unexpected_exception_is_a_500_without_internals(api_alice, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(services, "list_jobs", boom)
    api_alice.raise_request_exception = False

    response = api_alice.get(f"{API}/jobs")

    error = assert_error(response, 500, "server_error")
    assert "secret internal detail" not in response.content.decode()
    assert error["details"] is None


def test_nul_characters_are_refused_not_crashing_the_database(api_alice):
    assert_error(api_alice.get(f"{API}/jobs?processor=a%00b"), 400, "invalid_request")
    assert_error(api_alice.get(f"{API}/jobs/job_%00"), 404, "not_found")
    response = create_json(api_alice, [{"name": "a"}], params={"template": "{name}\x00"})
    assert_error(response, 400, "invalid_request")


def test_a_huge_offset_is_an_empty_page(api_alice):
    body = api_alice.get(f"{API}/jobs?offset=99999999999999999999999").json()
    assert body["results"] == []


# --- rate limits --------------------------------------------------------------------------------


@pytest.fixture
def rates(monkeypatch):
    """Set tiny rates (DRF reads DEFAULT_THROTTLE_RATES once, into the throttle class)."""

    def set_rates(**given: str) -> None:
        monkeypatch.setattr(
            GroupRateThrottle, "THROTTLE_RATES", {**GroupRateThrottle.THROTTLE_RATES, **given}
        )

    return set_rates


def test_reads_over_the_rate_are_429_with_retry_after(api_alice, rates):
    rates(read="2/min")
    assert api_alice.get(f"{API}/jobs").status_code == 200
    assert api_alice.get(f"{API}/processors").status_code == 200

    response = api_alice.get(f"{API}/jobs")

    assert_error(response, 429, "rate_limited")
    # At most a period and a half: the counter treats a window's requests as spread over it.
    assert 1 <= int(response["Retry-After"]) <= 90


def test_the_rate_holds_over_any_period_not_only_within_fixed_windows(
    api_alice, rates, monkeypatch
):
    rates(read="2/min")
    clock = [1020.0]  # the start of a minute-long window (1020 = 17 × 60)
    monkeypatch.setattr(GroupRateThrottle, "timer", lambda self: clock[0])
    assert api_alice.get(f"{API}/jobs").status_code == 200
    clock[0] = 1050.0
    assert api_alice.get(f"{API}/jobs").status_code == 200

    clock[0] = 1090.0  # a new window, but the last minute already holds two requests
    response = api_alice.get(f"{API}/jobs")
    assert_error(response, 429, "rate_limited")
    # The previous window's two requests weigh 2 × (1 - t / 60); one more fits at t = 30 s.
    assert response["Retry-After"] == "20"

    clock[0] = 1110.0
    assert api_alice.get(f"{API}/jobs").status_code == 200
    clock[0] = 1115.0  # 2 × 25/60 + 1 ≈ 1.8 requests in the last minute: not room for another
    assert_error(api_alice.get(f"{API}/jobs"), 429, "rate_limited")


def test_the_cached_count_stays_small_however_many_requests(api_alice, alice, rates):
    """DRF's own throttle keeps every request's time; this one keeps (window, count, before)."""
    rates(read="1000/min")
    for _ in range(30):
        assert api_alice.get(f"{API}/jobs").status_code == 200
    key = APIKey.objects.get(owner=alice)
    _window, count, before = sliding_window.state(cache, f"rate:read:key:{key.pk}")
    assert count + before == 30


def test_groups_are_separate_buckets(api_alice, alice, new_job, rates):
    rates(read="1/min", control="1/min", download="1/min", create="1/min")
    job = new_job(alice, "name\na\n")
    assert api_alice.get(f"{API}/jobs/{job.public_id}").status_code == 200
    assert api_alice.get(f"{API}/jobs/{job.public_id}/results").status_code == 200
    assert api_alice.post(f"{API}/jobs/{job.public_id}/cancel").status_code == 200
    assert create_json(api_alice, [{"name": "a"}]).status_code == 201

    assert_error(api_alice.get(f"{API}/jobs/{job.public_id}/rows"), 429, "rate_limited")
    assert_error(api_alice.get(f"{API}/jobs/{job.public_id}/results"), 429, "rate_limited")
    assert_error(api_alice.post(f"{API}/jobs/{job.public_id}/pause"), 429, "rate_limited")
    assert_error(api_alice.post(f"{API}/jobs/validate", {}, format="json"), 429, "rate_limited")


def test_rate_limits_are_per_key(api_alice, api_bob, rates):
    rates(read="1/min")
    assert api_alice.get(f"{API}/jobs").status_code == 200
    assert api_bob.get(f"{API}/jobs").status_code == 200
    assert api_alice.get(f"{API}/jobs").status_code == 429
