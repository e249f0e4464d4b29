"""A busy or unreachable database is a 503 with Retry-After (envelope on the API), never a 500."""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from tests.conftest import make_job

pytestmark = pytest.mark.django_db

LOCKED = OperationalError("database is locked")
GONE = OperationalError("server closed the connection unexpectedly")


def raising(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


def assert_api_503(response, code: str) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "2"
    body = response.json()
    assert body["error"]["code"] == code
    assert "try again" in body["error"]["message"]
    assert body["error"]["details"] is None


def test_api_read_on_a_locked_database_is_503_database_busy(api_alice, alice, monkeypatch):
    job = make_job(alice, "name\nAda\n")
    monkeypatch.setattr("jobs.services.get_job", raising(LOCKED))
    response = api_alice.get(f"/api/v1/jobs/{job.public_id}")
    assert_api_503(response, "database_busy")


def test_api_control_with_the_database_gone_is_503_service_unavailable(
    api_alice, alice, monkeypatch
):
    job = make_job(alice, "name\nAda\n")
    monkeypatch.setattr("jobs.services.pause", raising(GONE))
    response = api_alice.post(f"/api/v1/jobs/{job.public_id}/pause")
    assert_api_503(response, "service_unavailable")


def test_api_authentication_failing_on_the_database_is_503(api_alice, monkeypatch):
    monkeypatch.setattr("apikeys.services.check_key", raising(InterfaceError("connection closed")))
    response = api_alice.get("/api/v1/jobs")
    assert_api_503(response, "service_unavailable")


def test_html_view_on_a_locked_database_is_a_plain_503_page(client_alice, monkeypatch):
    monkeypatch.setattr("jobs.services.list_jobs", raising(LOCKED))
    response = client_alice.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response["Content-Type"].startswith("text/html")
    assert b"The database is busy" in response.content
    assert b"Traceback" not in response.content


def test_database_error_in_a_middleware_is_a_503_too(alice, monkeypatch):
    # Outside any view (here the session middleware saving the session on the way out):
    # Django's handler500 answers, and it answers 503 for the database's errors.
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    monkeypatch.setattr(
        "django.contrib.sessions.middleware.SessionMiddleware.process_response", raising(LOCKED)
    )
    page = client.get("/")
    assert page.status_code == 503 and page["Retry-After"] == "2"
    api = client.get("/api/v1/jobs")
    assert_api_503(api, "database_busy")


def test_other_errors_stay_500(alice, monkeypatch):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    monkeypatch.setattr("jobs.services.list_jobs", raising(RuntimeError("a bug")))
    assert client.get("/").status_code == 500
