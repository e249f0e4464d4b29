"""/api/v1/keys and API key authentication, through real HTTP requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from apikeys import keyformat, services
from apikeys.models import APIKey
from batchhub.api import GroupRateThrottle

KEYS = "/api/v1/keys"


def _assert_401(response) -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["error"]["code"] == "not_authenticated"
    assert body["error"]["message"]
    assert "details" in body["error"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_the_key_works_with_the_x_api_key_header(api, key_a):
    key, raw = key_a
    response = api.get(KEYS, headers={"X-API-Key": raw})
    assert response.status_code == 200
    assert [k["id"] for k in response.json()["results"]] == [key.public_id]


def test_the_key_works_as_a_bearer_token(api, key_a):
    key, raw = key_a
    response = api.get(KEYS, headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 200
    assert response.json()["results"][0]["id"] == key.public_id
    # The scheme name is case-insensitive (RFC 7235).
    assert api.get(KEYS, headers={"Authorization": f"bearer {raw}"}).status_code == 200


def test_no_credentials_is_401_not_403(api, db):
    _assert_401(api.get(KEYS))


def _wrong_secret(key, raw):
    return keyformat.build(key.lookup_id)


def _wrong_checksum(key, raw):
    return raw[:-1] + ("A" if raw[-1] != "A" else "B")


def _malformed(key, raw):
    return raw.replace("_", "-")


def _unknown_id(key, raw):
    return keyformat.build(keyformat.new_lookup_id())


@pytest.mark.parametrize("mangle", [_wrong_secret, _wrong_checksum, _malformed, _unknown_id])
@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_bad_keys_get_401_with_the_error_body(api, key_a, mangle, header):
    key, raw = key_a
    bad = mangle(key, raw)
    value = f"Bearer {bad}" if header == "Authorization" else bad
    response = api.get(KEYS, headers={header: value})
    _assert_401(response)
    assert response.json()["error"]["message"] == "Invalid API key."


def test_an_empty_key_header_is_401_not_anonymous(api, db):
    _assert_401(api.get(KEYS, headers={"X-API-Key": ""}))
    _assert_401(api.get(KEYS, headers={"Authorization": "Bearer"}))


def test_expired_key_gets_401(api, alice):
    key, raw = services.create_key(alice, "soon", timezone.now() + timedelta(minutes=1))
    assert api.get(KEYS, headers={"X-API-Key": raw}).status_code == 200
    # Saved through the model (as the admin does), which drops the key's cached entry.
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    response = api.get(KEYS, headers={"X-API-Key": raw})
    _assert_401(response)
    assert "expired" in response.json()["error"]["message"]


def test_a_revoked_key_fails_on_the_very_next_request(api, key_a):
    key, raw = key_a
    auth = {"Authorization": f"Bearer {raw}"}
    assert api.get(KEYS, headers=auth).status_code == 200
    # The key revokes itself; the next request with it is refused.
    assert api.delete(f"{KEYS}/{key.public_id}", headers=auth).status_code == 204
    response = api.get(KEYS, headers=auth)
    _assert_401(response)
    assert "revoked" in response.json()["error"]["message"]


def test_a_deactivated_owner_cannot_use_their_key(api, key_a, alice):
    _, raw = key_a
    alice.is_active = False
    alice.save()
    _assert_401(api.get(KEYS, headers={"X-API-Key": raw}))


def test_create_returns_the_key_once_and_the_list_never_does(api, key_a):
    _, raw = key_a
    auth = {"X-API-Key": raw}
    response = api.post(
        KEYS, {"name": "ci-script", "expires_at": None}, format="json", headers=auth
    )
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert {
        "id",
        "name",
        "prefix",
        "key",
        "created_at",
        "expires_at",
        "last_used_at",
    } <= body.keys()
    assert body["id"].startswith("key_") and body["name"] == "ci-script"
    assert body["expires_at"] is None and body["last_used_at"] is None
    assert body["key"].startswith(body["prefix"].removesuffix("…"))
    assert body["created_at"].endswith("Z")
    assert keyformat.parse(body["key"]) is not None

    listed = api.get(KEYS, headers=auth)
    assert body["key"] not in listed.content.decode()
    assert all("key" not in item for item in listed.json()["results"])
    # The new key itself works.
    new = api.get(KEYS, headers={"X-API-Key": body["key"]})
    assert new.status_code == 200 and new.json()["count"] == 2


def test_create_with_an_expiry(api, key_a):
    _, raw = key_a
    when = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    response = api.post(
        KEYS,
        {"name": "monthly", "expires_at": when.isoformat()},
        format="json",
        headers={"X-API-Key": raw},
    )
    assert response.status_code == 201
    assert response.json()["expires_at"].startswith(when.strftime("%Y-%m-%dT%H:%M:%S"))
    assert APIKey.objects.get(public_id=response.json()["id"]).expires_at == when


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "expires_at": "yesterday"}, "expires_at"),
        ({"name": "ok", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_invalid_input_is_400_invalid_request(api, key_a, payload, field):
    _, raw = key_a
    response = api.post(KEYS, payload, format="json", headers={"X-API-Key": raw})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["details"]
    assert APIKey.objects.count() == 1


def test_the_list_is_paginated(api, alice):
    _, raw = services.create_key(alice, "k0")
    for i in range(1, 5):
        services.create_key(alice, f"k{i}")
    response = api.get(KEYS, {"limit": 2, "offset": 1}, headers={"X-API-Key": raw})
    body = response.json()
    assert body["count"] == 5
    assert [k["name"] for k in body["results"]] == ["k3", "k2"]
    assert "limit=2" in body["next"] and body["previous"] is not None


def test_revoked_keys_stay_listed_as_revoked(api, alice, key_a):
    key, _ = key_a
    _, raw = services.create_key(alice, "other")
    assert api.delete(f"{KEYS}/{key.public_id}", headers={"X-API-Key": raw}).status_code == 204
    item = next(
        k
        for k in api.get(KEYS, headers={"X-API-Key": raw}).json()["results"]
        if k["id"] == key.public_id
    )
    assert item["status"] == "revoked" and item["revoked_at"].endswith("Z")
    # Revoking again is harmless.
    assert api.delete(f"{KEYS}/{key.public_id}", headers={"X-API-Key": raw}).status_code == 204


def test_bob_cannot_list_use_or_revoke_alices_keys(api, key_a, key_b):
    alice_key, alice_raw = key_a
    bob_key, bob_raw = key_b
    as_bob = {"X-API-Key": bob_raw}

    listed = api.get(KEYS, headers=as_bob).json()
    assert [k["id"] for k in listed["results"]] == [bob_key.public_id]

    response = api.delete(f"{KEYS}/{alice_key.public_id}", headers=as_bob)
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "details": None}
    }
    # Same answer as a key that does not exist at all.
    missing = api.delete(f"{KEYS}/key_01HZZZZZZZZZZZZZZZZZZZZZZZ", headers=as_bob)
    assert (missing.status_code, missing.json()) == (404, response.json())

    # Bob's secret with Alice's lookup id is not Alice's key.
    forged = keyformat.build(alice_key.lookup_id, bob_raw.split("_")[2])
    _assert_401(api.get(KEYS, headers={"X-API-Key": forged}))

    alice_key.refresh_from_db()
    assert alice_key.revoked_at is None
    assert api.get(KEYS, headers={"X-API-Key": alice_raw}).status_code == 200


def test_session_authentication_still_works_for_the_browser(client_alice, key_a):
    response = client_alice.get(KEYS)
    assert response.status_code == 200 and response.json()["count"] == 1


def test_create_and_revoke_use_the_control_rate_group(api, key_a, monkeypatch):
    key, raw = key_a
    monkeypatch.setattr(
        GroupRateThrottle, "THROTTLE_RATES", {"read": "100/min", "control": "2/min"}
    )
    auth = {"X-API-Key": raw}
    assert api.post(KEYS, {"name": "a"}, format="json", headers=auth).status_code == 201
    assert api.post(KEYS, {"name": "b"}, format="json", headers=auth).status_code == 201
    limited = api.post(KEYS, {"name": "c"}, format="json", headers=auth)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited["Retry-After"]) >= 1
    assert api.delete(f"{KEYS}/{key.public_id}", headers=auth).status_code == 429
    assert api.get(KEYS, headers=auth).status_code == 200  # reads have their own bucket


def test_the_openapi_schema_documents_bodies_errors_and_auth(settings):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    keys = schema["paths"]["/api/v1/keys"]
    created = keys["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    created_props = schema["components"]["schemas"][created.rsplit("/", 1)[1]]["properties"]
    assert "key" in created_props
    assert {"400", "401", "429"} <= keys["post"]["responses"].keys()
    request_ref = keys["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schema["components"]["schemas"][request_ref.rsplit("/", 1)[1]]["properties"]) == {
        "name",
        "expires_at",
    }
    listed = keys["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert "key" not in schema["components"]["schemas"][listed.rsplit("/", 1)[1]]["properties"][
        "results"
    ]["items"].get("properties", {})
    detail = schema["paths"]["/api/v1/keys/{id}"]["delete"]["responses"]
    assert {"204", "404"} <= detail.keys()
    assert {"apiKeyHeader", "bearerAuth"} <= schema["components"]["securitySchemes"].keys()
    assert {"apiKeyHeader": []} in keys["get"]["security"]
    assert {"bearerAuth": []} in keys["get"]["security"]


def test_two_different_keys_in_the_two_headers_are_refused(api, key_a, alice):
    _, raw = key_a
    _, other = services.create_key(alice, "other", None)

    response = api.get(KEYS, headers={"X-API-Key": raw, "Authorization": f"Bearer {other}"})

    _assert_401(response)
    assert "Two different API keys" in response.json()["error"]["message"]
    # Whichever header holds a key that does not work: still not the other one's request.
    bad = _wrong_secret(*key_a)
    _assert_401(api.get(KEYS, headers={"X-API-Key": raw, "Authorization": f"Bearer {bad}"}))
    _assert_401(api.get(KEYS, headers={"X-API-Key": bad, "Authorization": f"Bearer {raw}"}))


def test_the_same_key_in_both_headers_is_fine(api, key_a):
    key, raw = key_a
    response = api.get(KEYS, headers={"X-API-Key": raw, "Authorization": f"Bearer {raw}"})
    assert response.status_code == 200
    assert response.json()["results"][0]["id"] == key.public_id
    # Another scheme in Authorization is not a key (e.g. a proxy's Basic credentials).
    basic = api.get(KEYS, headers={"X-API-Key": raw, "Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 200


def test_a_key_request_with_a_misspelt_expiry_makes_no_key(api, key_a):
    _, raw = key_a
    before = APIKey.objects.count()
    response = api.post(
        KEYS,
        {"name": "ci", "expires": "2030-01-01T00:00:00Z"},
        format="json",
        headers={"X-API-Key": raw},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Unknown field 'expires' (did you mean 'expires_at'?)."
    )
    assert APIKey.objects.count() == before
