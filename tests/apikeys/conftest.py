from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apikeys import services


@pytest.fixture(autouse=True)
def _apikeys_env(settings):
    # Throttle counters must not leak between tests (or test runs) through a file cache.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()  # locmem data is per process, not per settings override
    # Users are created in most tests; the real hasher would dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api():
    """An API client with no session: authenticates only with the key headers a test sets."""
    return APIClient()


@pytest.fixture
def key_a(alice):
    """(APIKey, plaintext) belonging to alice."""
    return services.create_key(alice, "alice-script")


@pytest.fixture
def key_b(bob):
    return services.create_key(bob, "bob-script")
