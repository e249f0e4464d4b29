from __future__ import annotations

import pytest

# The same real-worker fixtures as the end-to-end tests.
from tests.e2e.conftest import worker, worker_factory  # noqa: F401


@pytest.fixture(autouse=True)
def crash_processor(monkeypatch):
    """The workers load it through BATCHHUB_PROCESSORS; the test process needs it to create jobs."""
    from jobs.processors import base
    from tests.support.fault_processors import CrashProcessor

    monkeypatch.setitem(base.registry(), CrashProcessor.name, CrashProcessor)
