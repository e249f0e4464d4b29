"""The OpenAPI schema describes what the views do; the docs page is served without a CDN."""

from __future__ import annotations

import re

import pytest
import yaml

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict:
    """Served once for the module's tests, which only read it; serving it reads no table."""
    from django.test import Client

    response = Client().get("/api/v1/schema/")
    assert response.status_code == 200
    return yaml.load(response.content, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def test_every_endpoint_of_the_contract_is_described(schema):
    paths = schema["paths"]
    expected = {
        "/api/v1/processors": {"get"},
        "/api/v1/processors/{name}": {"get"},
        "/api/v1/jobs": {"get", "post"},
        "/api/v1/jobs/validate": {"post"},
        "/api/v1/jobs/{id}": {"get", "patch", "delete"},
        "/api/v1/jobs/{id}/pause": {"post"},
        "/api/v1/jobs/{id}/resume": {"post"},
        "/api/v1/jobs/{id}/cancel": {"post"},
        "/api/v1/jobs/{id}/retry": {"post"},
        "/api/v1/jobs/{id}/results": {"get"},
        "/api/v1/jobs/{id}/rows": {"get"},
        "/api/v1/jobs/{id}/events": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path


def test_job_creation_takes_multipart_and_json_and_documents_its_errors(schema):
    create = schema["paths"]["/api/v1/jobs"]["post"]
    content = create["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    form = schema["components"]["schemas"][
        content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert form["properties"]["file"]["format"] == "binary"
    assert {"200", "201", "400", "401", "409", "413", "415", "429"} <= set(create["responses"])
    error_ref = create["responses"]["413"]["content"]["application/json"]["schema"]["$ref"]
    error = schema["components"]["schemas"][error_ref.rsplit("/", 1)[1]]
    assert error["required"] == ["error"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])


def test_job_creation_documents_its_quotas(schema):
    create = schema["paths"]["/api/v1/jobs"]["post"]
    responses = create["responses"]
    assert "too_many_rows" in responses["413"]["description"]
    assert "quota_exceeded" in responses["429"]["description"]
    assert "rows per job" not in responses["429"]["description"]  # no longer a 429
    assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_the_job_object_component_has_the_contract_fields(schema):
    job = schema["components"]["schemas"]["Job"]
    for name in ("id", "status", "counts", "progress", "links", "error", "expires_at"):
        assert name in job["properties"]
    assert (
        job["properties"]["error"].get("nullable") is True or "oneOf" in job["properties"]["error"]
    )


def test_results_lists_its_media_types(schema):
    results = schema["paths"]["/api/v1/jobs/{id}/results"]["get"]
    assert set(results["responses"]["200"]["content"]) == {
        "text/csv",
        "application/x-ndjson",
        "application/json",
    }


def test_api_keys_are_the_security_schemes(schema):
    schemes = schema["components"]["securitySchemes"]
    key = schemes["apiKeyHeader"]
    assert (key["type"], key["in"], key["name"]) == ("apiKey", "header", "X-API-Key")
    assert schemes["bearerAuth"]["scheme"] == "bearer"


def test_the_docs_page_uses_local_static_files(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page and "unpkg" not in page


def test_the_docs_page_runs_its_inline_code_by_nonce_only(client):
    response = client.get("/api/docs/")
    policy = response["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    page = response.content.decode()
    assert f'<script nonce="{nonce}">' in page and f'<style nonce="{nonce}">' in page
    assert "unsafe-inline" not in policy
    assert "fonts.googleapis" not in page


def test_redoc_leads_to_the_local_docs(client):
    response = client.get("/api/redoc/")
    assert response.status_code == 301 and response["Location"] == "/api/docs/"


def test_format_json_serves_the_schema_as_json(client):
    import json

    response = client.get("/api/v1/schema/?format=json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["openapi"].startswith("3.")
    assert response["Content-Disposition"].endswith('.json"')


def test_format_yaml_and_no_format_serve_yaml(client):
    for url in ("/api/v1/schema/?format=yaml", "/api/v1/schema/"):
        response = client.get(url)
        assert response.status_code == 200
        assert "yaml" in response["Content-Type"] or "openapi" in response["Content-Type"]
        assert response.content.startswith(b"openapi:"), url


def test_an_unknown_schema_format_is_a_400_naming_the_choices(client):
    response = client.get("/api/v1/schema/?format=xml")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "xml" in error["message"] and error["details"] == {"format": ["json", "yaml"]}


def test_the_schema_view_is_not_in_the_schema(schema):
    assert not [path for path in schema["paths"] if "schema" in path]


def test_every_job_path_names_its_id_parameter_id(schema):
    """One name for one thing: a client generator gets `id` on every job operation."""
    job_paths = [path for path in schema["paths"] if path.startswith("/api/v1/jobs/{")]
    assert "/api/v1/jobs/{id}/webhook/redeliver" in job_paths
    for path in job_paths:
        assert path.startswith("/api/v1/jobs/{id}"), path
        for operation in schema["paths"][path].values():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert names == ["id"], (path, names)
