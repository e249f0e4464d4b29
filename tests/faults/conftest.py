from __future__ import annotations

import pytest

from tests.support.worker import Worker, flush_broker, require_real_services


@pytest.fixture
def worker_factory(transactional_db, tmp_path, settings):
    """Start real celery workers against the test database; all are stopped at the end."""
    require_real_services()
    settings.BATCHHUB_LEASE_SECONDS = 5
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


@pytest.fixture(autouse=True)
def crash_processor(monkeypatch):
    """The workers load it through BATCHHUB_PROCESSORS; the test process needs it to create jobs."""
    from jobs.processors import base
    from tests.support.fault_processors import CrashProcessor

    monkeypatch.setitem(base.registry(), CrashProcessor.name, CrashProcessor)
