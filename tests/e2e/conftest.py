from __future__ import annotations

import pytest

from tests.support.worker import Worker, flush_broker, require_real_services


@pytest.fixture
def worker_factory(transactional_db, tmp_path, settings):
    """Start real celery workers against the test database; all are stopped at the end."""
    require_real_services()
    settings.BATCHHUB_LEASE_SECONDS = 5
    # Jobs calling the loopback stand-ins are created here, and run by workers allowed the same
    # (tests.support.worker.worker_env).
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    flush_broker()
    started: list[Worker] = []

    def start(**kwargs) -> Worker:
        worker = Worker(tmp_path, name=f"w{len(started) + 1}", **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(worker_factory):
    return worker_factory()
