"""A job naming a saved credential its owner has not got is refused at create, naming the param.

It used to be accepted and found only when every row had failed. Another user's credential of
that name counts as missing, with the very same answer, so the API never tells it exists.
"""

from __future__ import annotations

import json

import pytest

from jobs.credentials import save_credential
from jobs.models import Job

from .conftest import API, assert_error, create_form, create_json

pytestmark = pytest.mark.django_db

LLM_HOST = "llm.example.com"
MISSING = "You have no saved credential named 'my-llm'"


@pytest.fixture(autouse=True)
def _public_hosts(fake_dns):
    # check_destinations resolves fixed hosts at create: a public address, without the network.
    fake_dns[LLM_HOST] = ["93.184.216.34"]


def _llm(credential: str = "my-llm") -> dict:
    return {
        "base_url": f"https://{LLM_HOST}/v1",
        "model": "m",
        "prompt": "{name}",
        "credential": credential,
    }


def _http(credential: str = "svc") -> dict:
    return {
        "url": "https://{host}/users/{name}",
        "headers": {"Authorization": {"$credential": credential}, "Accept": "application/json"},
    }


def _refused(response, param: str, name: str) -> dict:
    error = assert_error(response, 400, "invalid_request")
    assert error["message"].startswith(f"params.{param}: ")
    assert f"no saved credential named '{name}'" in error["message"]
    assert error["details"]["params"] == [
        {"param": param, "message": error["message"].removeprefix(f"params.{param}: ")}
    ]
    assert Job.objects.count() == 0
    return error


def test_multipart_create_is_refused_naming_the_param(api_alice):
    response = create_form(api_alice, "name\nann\n", processor="llm", params=_llm())
    _refused(response, "credential", "my-llm")


def test_json_create_is_refused_naming_the_header(api_alice):
    response = create_json(
        api_alice, [{"name": "ann", "host": "api.example.com"}], processor="http", params=_http()
    )
    _refused(response, "headers.Authorization", "svc")


def test_validate_is_refused_too(api_alice):
    response = api_alice.post(
        f"{API}/jobs/validate",
        {"processor": "llm", "params": _llm(), "rows": [{"name": "ann"}]},
        format="json",
    )
    _refused(response, "credential", "my-llm")


def test_another_users_credential_counts_as_missing_and_says_nothing_more(api_alice, bob):
    never = create_form(api_alice, "name\nann\n", processor="llm", params=_llm()).json()
    save_credential(bob, "my-llm", "sk-bobs-key-000000000")
    response = create_form(api_alice, "name\nann\n", processor="llm", params=_llm())
    error = _refused(response, "credential", "my-llm")
    assert response.json() == never  # word for word what a name nobody has gets
    assert MISSING in error["message"]


def test_an_unreadable_credential_is_refused(api_alice, alice, settings):
    # The encryption key changes (not SECRET_KEY: the API key's digest depends on that one).
    settings.BATCHHUB_ENCRYPTION_KEY = "the passphrase the credential was saved under"
    save_credential(alice, "my-llm", "sk-live-abcdefghijkl")
    settings.BATCHHUB_ENCRYPTION_KEY = "another passphrase, and nothing opens the first one"
    error = assert_error(
        create_form(api_alice, "name\nann\n", processor="llm", params=_llm()),
        400,
        "invalid_request",
    )
    assert "cannot be decrypted" in error["message"]
    assert error["details"]["params"][0]["param"] == "credential"
    assert Job.objects.count() == 0


def test_the_owners_own_credential_is_accepted(api_alice, alice):
    save_credential(alice, "my-llm", "sk-live-abcdefghijkl")
    save_credential(alice, "svc", "token-abcdefghijkl")
    response = create_form(api_alice, "name\nann\n", processor="llm", params=_llm())
    assert response.status_code == 201, response.content
    response = create_json(
        api_alice, [{"name": "ann", "host": "api.example.com"}], processor="http", params=_http()
    )
    assert response.status_code == 201, response.content
    # The job keeps the name only, never the secret.
    assert "sk-live" not in json.dumps(list(Job.objects.values_list("params", flat=True)))
