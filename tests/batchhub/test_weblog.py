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
