"""Failed logins are throttled per account and per client address; API keys are not affected."""

from __future__ import annotations

import math

import pytest
from django.core.cache import cache
from django.test import Client

from batchhub import login_throttle
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
BLOCKED = "Too many failed logins for this account or from your address."


@pytest.fixture(autouse=True)
def _throttle(settings, monkeypatch):
    settings.BATCHHUB_LOGIN_MAX_FAILURES = 5
    settings.BATCHHUB_LOGIN_MAX_FAILURES_PER_ADDRESS = 20
    settings.BATCHHUB_LOGIN_FAILURE_WINDOW = 900
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    clock = [900.0 * 2000 + 1]  # just after a window starts
    monkeypatch.setattr(login_throttle, "_now", lambda: clock[0])
    cache.clear()
    yield clock
    cache.clear()


def _login(username: str, password: str, address: str = "203.0.113.7", **extra):
    return Client(REMOTE_ADDR=address).post(
        LOGIN, {"username": username, "password": password}, **extra
    )


def test_the_sixth_wrong_password_for_an_account_is_refused_with_429(alice):
    for _ in range(5):
        response = _login("alice", "guess")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()

    response = _login("alice", "guess")

    assert response.status_code == 429
    page = response.content.decode()
    wait = int(response["Retry-After"])
    # The five failures weigh on the next window too: 15 minutes and most of another 15.
    assert 900 < wait <= 1800
    assert f"{BLOCKED} Try again in {math.ceil(wait / 60)} minutes." in page
    assert '<div class="message error" role="alert">' in page  # the login page's own error box


def test_while_blocked_even_the_right_password_is_not_checked(alice):
    for _ in range(5):
        _login("alice", "guess")

    response = _login("alice", PASSWORD)

    assert response.status_code == 429
    assert "_auth_user_id" not in Client().session  # nothing logged in
    assert BLOCKED in response.content.decode()


def test_the_account_is_blocked_from_every_address(alice):
    for i in range(5):
        _login("alice", "guess", address=f"198.51.100.{i}")
    assert _login("alice", PASSWORD, address="192.0.2.99").status_code == 429
    assert _login("ALICE ", "guess", address="192.0.2.98").status_code == 429  # same account


def test_an_address_is_blocked_across_accounts(alice, bob):
    for i in range(20):
        assert _login(f"user{i}", "guess").status_code == 200

    assert _login("bob", PASSWORD).status_code == 429
    assert _login("bob", PASSWORD, address="192.0.2.1").status_code == 302  # another address


def test_the_block_lifts_as_the_window_slides(alice, _throttle):
    clock = _throttle
    for _ in range(5):
        _login("alice", "guess")
    response = _login("alice", PASSWORD)
    assert response.status_code == 429
    wait = int(response["Retry-After"])

    clock[0] += wait - 5
    assert _login("alice", PASSWORD).status_code == 429
    clock[0] += 6
    response = _login("alice", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"


def test_thirty_fast_guesses_get_five_tries(alice):
    """The report: 30 wrong passwords in 11 s went through unhindered."""
    statuses = [_login("alice", f"guess{i}").status_code for i in range(30)]
    assert statuses.count(200) == 5 and statuses.count(429) == 25
    assert statuses[:5] == [200] * 5


def test_a_right_password_under_the_limit_logs_in(alice):
    for _ in range(4):
        _login("alice", "guess")
    response = _login("alice", PASSWORD)
    assert response.status_code == 302


def test_the_admin_login_is_throttled_too(alice):
    for _ in range(5):
        _login("alice", "guess")
    response = Client(REMOTE_ADDR="203.0.113.7").post(
        "/admin/login/?next=/admin/", {"username": "alice", "password": "guess"}
    )
    assert BLOCKED in response.content.decode()


def test_api_keys_are_not_slowed_by_password_guessing(alice, api_alice):
    for _ in range(30):
        _login("alice", "guess", address="127.0.0.1")
    assert _login("alice", PASSWORD, address="127.0.0.1").status_code == 429

    response = api_alice.get("/api/v1/jobs", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200


def test_behind_the_proxy_the_address_is_the_one_it_saw(alice, settings):
    settings.BATCHHUB_BEHIND_PROXY = True
    for i in range(20):
        # The client writes anything it likes in front; the proxy appends what it saw.
        _login(f"user{i}", "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}, 203.0.113.50")
    response = _login("bob", "x", HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.50")
    assert response.status_code == 429
    assert _login("bob", "x", HTTP_X_FORWARDED_FOR="203.0.113.51").status_code == 200
