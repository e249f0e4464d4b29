"""Property-based tests from the live OpenAPI schema (schemathesis), through the real WSGI app.

Every operation gets a bounded number of generated requests, sent with a real API key; none may
end in a server error, and every response must match what the schema says for its status code.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from apikeys.services import create_key
from batchhub.api import GroupRateThrottle

MAX_EXAMPLES = 10


@pytest.fixture
def keep_connection():
    """Requests go through the real WSGI handler, which closes the database connection when a
    response ends; the test's transaction lives on that connection, so keep it open (as Django's
    own test client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(keep_connection, alice, new_job, monkeypatch) -> str:
    # Generated requests come fast; rate limits are tested elsewhere.
    monkeypatch.setattr(
        GroupRateThrottle,
        "THROTTLE_RATES",
        dict.fromkeys(GroupRateThrottle.THROTTLE_RATES, "100000/min"),
    )
    new_job(alice, "name\nann\n")  # something to list
    _key, raw = create_key(alice, "schemathesis")
    return raw


def _load_schema():
    # Loaded at collection (schemathesis' lazy fixture loader does not work with this pytest);
    # serving the schema needs no database.
    return schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis directory in the working tree
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db
def test_api_conforms_to_its_schema(case, api_key):
    case.call_and_validate(
        headers={"X-API-Key": api_key},
        checks=[not_a_server_error, response_schema_conformance],
    )
