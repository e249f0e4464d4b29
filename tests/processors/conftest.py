from __future__ import annotations

from typing import Any

import pytest

from jobs.processors.base import RowInput

from .servers import EchoHandler, LocalServer, OpenAIHandler, SiteHandler


@pytest.fixture(autouse=True)
def stand_ins_on_loopback(settings):
    """The stand-ins for outside services listen on 127.0.0.1, a private address processors
    may not reach by default (tests/processors/test_network_guard.py checks that refusal)."""
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"


@pytest.fixture
def openai_server():
    with LocalServer(OpenAIHandler) as server:
        yield server


@pytest.fixture
def site_server():
    with LocalServer(SiteHandler) as server:
        yield server


@pytest.fixture
def echo_server():
    with LocalServer(EchoHandler) as server:
        yield server


@pytest.fixture
def locmem_cache(settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "processors-tests",
        },
    }
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


def make_row(
    values: dict[str, Any], inputs: dict[str, Any] | None = None, index: int = 0
) -> RowInput:
    return RowInput(
        index=index,
        ref=str(index + 1),
        values=values,
        inputs=inputs if inputs is not None else values,
    )
