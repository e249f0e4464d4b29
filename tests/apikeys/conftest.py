from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from ..factories import APIKeyFactory


@pytest.fixture(autouse=True)
def _apikeys_env(settings):
    # Throttle counters must not leak between tests (or test runs) through a file cache.
    settings.CACHES = {
        **settings.CACHES,
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    cache.clear()  # locmem data is per process, not per settings override


@pytest.fixture
def api():
    """An API client with no session: authenticates only with the key headers a test sets."""
    return APIClient()


@pytest.fixture
def key_a(alice):
    """(APIKey, plaintext) belonging to alice."""
    key = APIKeyFactory(owner=alice, name="alice-script")
    return key, key.raw


@pytest.fixture
def key_b(bob):
    key = APIKeyFactory(owner=bob, name="bob-script")
    return key, key.raw
