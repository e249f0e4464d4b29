"""/healthz (the process answers) and /readyz (database, cache and broker reachable), for load
balancers: no authentication, session, CSRF or rate limit, and a 503 naming what failed."""

from __future__ import annotations

import socket
import time

import pytest
from django.db import OperationalError, connections
from django.test import Client

from batchhub import health


@pytest.fixture(autouse=True)
def _no_threads_left():
    # Tests that fork later in this process must not inherit the checks' threads.
    yield
    health.stop()


def raising(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def database_class():
    """The database wrapper's class: patching it reaches the checks' own thread too.

    Its cursors, not its connections: the suite's in-memory database is never closed, so the
    check's thread may hold one from an earlier test.
    """
    return type(connections["default"])


def test_healthz_answers_without_database_session_or_allowed_host():
    # No django_db mark: pytest-django refuses any database access here.
    response = Client(HTTP_HOST="10.1.2.3:8000").get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")


def test_the_site_itself_still_refuses_an_unknown_host():
    assert Client(HTTP_HOST="10.1.2.3:8000").get("/login/").status_code == 400


@pytest.mark.django_db
def test_readyz_is_200_with_every_check_ok():
    response = Client().get("/readyz")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "broker": "ok"},
    }
    assert not response.cookies


@pytest.mark.django_db
def test_a_trailing_slash_and_head_are_answered_and_a_post_is_not():
    client = Client(enforce_csrf_checks=True)

    assert client.get("/readyz/").status_code == 200
    assert client.head("/healthz").status_code == 200
    refused = client.post("/healthz")
    assert refused.status_code == 405 and refused["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_readyz_names_the_database_when_it_is_unreachable(database_class, monkeypatch):
    refused = OperationalError('connection to server at "db", port 5432 failed: refused')
    monkeypatch.setattr(database_class, "create_cursor", raising(refused))

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["database"]
    assert body["checks"] == {
        "database": "failed: OperationalError",
        "cache": "ok",
        "broker": "ok",
    }
    assert "5432" not in response.content.decode()  # where the database is stays in the log


@pytest.mark.django_db
def test_a_database_that_hangs_fails_readyz_within_the_timeout(
    database_class, monkeypatch, settings
):
    settings.BATCHHUB_READYZ_TIMEOUT = 0.3
    create_cursor = database_class.create_cursor

    def slow(self, *args, **kwargs):
        time.sleep(1.5)
        return create_cursor(self, *args, **kwargs)

    monkeypatch.setattr(database_class, "create_cursor", slow)

    started = time.monotonic()
    first = Client().get("/readyz")
    second = Client().get("/readyz")
    elapsed = time.monotonic() - started

    assert first.status_code == second.status_code == 503
    assert first.json()["failing"] == ["database"]
    assert first.json()["checks"]["database"] == "timed out after 0.3 s"
    assert elapsed < 1.2
    # The second probe waited on the check still running, not on a thread of its own.
    assert not health._running["database"].done()


@pytest.mark.django_db
def test_readyz_names_the_broker_when_it_is_unreachable(monkeypatch):
    # What Celery publishes with (the environment wins over the settings, as for the worker).
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", f"redis://127.0.0.1:{closed_port()}/0")

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"].startswith("failed: ")
    assert body["checks"]["database"] == body["checks"]["cache"] == "ok"


@pytest.mark.django_db
def test_readyz_names_the_cache_when_it_keeps_nothing(monkeypatch):
    from django.core.cache.backends.locmem import LocMemCache

    monkeypatch.setattr(LocMemCache, "set", lambda *args, **kwargs: None)

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["cache"]
    assert response.json()["checks"]["cache"] == "failed: NotKept"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_runs_its_checks_on_threads_of_its_own():
    import os

    health._start("cache").result(timeout=5)  # the parent's pool, running
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 if its check ran
        try:
            os._exit(0 if health._start("cache").result(timeout=5) is None else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
