"""gunicorn's access log (batchhub/weblog.py): the polls answered from the cache are counted and
summed up once a minute; every other request keeps its own line."""

from __future__ import annotations

import datetime as dt

import pytest
from gunicorn.config import Config

from batchhub import weblog


class _Response:
    def __init__(self, status: int) -> None:
        self.status = f"{status} X"
        self.status_code = status
        self.sent = 10
        self.headers: list[tuple[str, str]] = []


class _Request:
    headers = [("HOST", "127.0.0.1:8000")]


def _environ(path: str, answered: bool) -> dict:
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    if answered:
        environ[weblog.ANSWERED_FROM_CACHE] = True
    return environ


@pytest.fixture
def log(tmp_path, monkeypatch):
    monkeypatch.delenv("BATCHHUB_ACCESS_LOG_POLLS", raising=False)
    path = tmp_path / "access.log"

    def make():
        cfg = Config()
        cfg.set("accesslog", str(path))
        logger = weblog.Logger(cfg)

        def lines() -> list[str]:
            for handler in logger.access_log.handlers:
                handler.flush()
            return path.read_text().splitlines() if path.exists() else []

        return logger, lines

    return make


def _access(logger, status: int, path: str, answered: bool) -> None:
    logger.access(
        _Response(status), _Request(), _environ(path, answered), dt.timedelta(milliseconds=1)
    )


def test_other_requests_keep_their_line_and_cached_polls_are_summed(log):
    logger, lines = log()
    _access(logger, 200, "/api/v1/jobs", answered=False)
    _access(logger, 404, "/api/v1/jobs/job_x", answered=False)  # the stack's answers: a line
    _access(logger, 429, "/api/v1/jobs/job_y", answered=False)
    assert len(lines()) == 3 and '"GET /api/v1/jobs/job_x HTTP/1.1" 404' in lines()[1]
    for _ in range(5):
        _access(logger, 200, "/api/v1/jobs/job_y", answered=True)
    assert len(lines()) == 3  # counted, not written

    logger._since -= weblog.SUMMARY_SECONDS  # a minute later, the next request writes the sum
    _access(logger, 200, "/api/v1/jobs/job_y", answered=True)
    written = lines()
    assert len(written) == 4
    assert "6 API status polls answered from the cache (200)" in written[3]
    _access(logger, 200, "/api/v1/jobs", answered=False)
    assert len(lines()) == 5  # nothing more to sum: only the request's own line


def test_a_marked_answer_that_is_not_a_200_keeps_its_line(log):
    logger, lines = log()
    _access(logger, 500, "/api/v1/jobs/job_y", answered=True)
    assert len(lines()) == 1


def test_every_poll_is_written_when_asked(log, monkeypatch):
    monkeypatch.setenv("BATCHHUB_ACCESS_LOG_POLLS", "1")
    logger, lines = log()
    for _ in range(3):
        _access(logger, 200, "/api/v1/jobs/job_y", answered=True)
    assert len(lines()) == 3


def test_the_procfile_uses_it():
    from pathlib import Path

    procfile = (Path(__file__).resolve().parents[2] / "Procfile").read_text()
    assert "--logger-class batchhub.weblog.Logger" in procfile


def _probe(logger, status: int, path: str) -> None:
    environ = _environ(path, answered=False)
    environ[weblog.HEALTH_PROBE] = path
    logger.access(_Response(status), _Request(), environ, dt.timedelta(milliseconds=1))


def test_answered_health_probes_are_summed_and_a_failing_one_keeps_its_line(log):
    # A load balancer asking every second would otherwise write most of the log.
    logger, lines = log()
    for _ in range(3):
        _probe(logger, 200, "/healthz")
    _probe(logger, 200, "/readyz")
    assert lines() == []
    _probe(logger, 503, "/readyz")  # a node leaving the pool: the operator sees each one
    _probe(logger, 503, "/readyz")
    assert len(lines()) == 2 and all('"GET /readyz HTTP/1.1" 503' in line for line in lines())

    logger._since -= weblog.SUMMARY_SECONDS
    _probe(logger, 200, "/readyz")
    written = lines()
    assert len(written) == 3
    assert "5 health probes answered 200 in the last 60 s (/healthz 3, /readyz 2)" in written[2]
    _access(logger, 200, "/api/v1/jobs", answered=False)
    assert len(lines()) == 4  # the sum is written once


def test_every_probe_is_written_when_asked(log, monkeypatch):
    monkeypatch.setenv("BATCHHUB_ACCESS_LOG_POLLS", "1")
    logger, lines = log()
    for _ in range(3):
        _probe(logger, 200, "/healthz")
    assert len(lines()) == 3


def _served(logger, answer) -> None:
    """What gunicorn logs for a test client's answer: its environ, with gunicorn's RAW_URI."""
    environ = {"RAW_URI": answer.wsgi_request.META["PATH_INFO"], **answer.wsgi_request.META}
    resp = _Response(answer.status_code)
    logger.access(resp, _Request(), environ, dt.timedelta(milliseconds=1))


@pytest.mark.django_db
def test_the_health_endpoints_mark_the_requests_they_answer(log, monkeypatch):
    from django.core.cache.backends.locmem import LocMemCache
    from django.test import Client

    from batchhub import health

    logger, lines = log()
    client = Client()
    try:
        for path in ("/healthz", "/readyz", "/healthz/"):
            answer = client.get(path)
            assert answer.status_code == 200
            _served(logger, answer)
        assert lines() == []
        monkeypatch.setattr(LocMemCache, "set", lambda *args, **kwargs: None)
        failing = client.get("/readyz")
        assert failing.status_code == 503
        _served(logger, failing)
        assert len(lines()) == 1 and '"GET /readyz HTTP/1.1" 503' in lines()[0]
        page = client.get("/accounts/login/")
        assert page.status_code == 200
        _served(logger, page)
        assert len(lines()) == 2  # any other page keeps its line
    finally:
        health.stop()  # tests that fork later must not inherit the checks' threads


def test_signed_link_tokens_are_not_written(log):
    # A signed results link (or upload URL) works without an API key until it expires; its
    # token was written whole in every access line.
    logger, lines = log()
    path = "/api/v1/jobs/job_x/download?token=WyJqb2Ii:sig-123&format=csv"
    environ = _environ(path, answered=False)
    environ["QUERY_STRING"] = path.split("?", 1)[1]
    environ["HTTP_REFERER"] = "http://host/api/v1/uploads/upl_y/content?token=secret-456"
    logger.access(_Response(200), _Request(), environ, dt.timedelta(milliseconds=1))

    (line,) = lines()
    assert "sig-123" not in line and "secret-456" not in line
    assert '"GET /api/v1/jobs/job_x/download?token=[redacted]&format=csv HTTP/1.1" 200' in line
