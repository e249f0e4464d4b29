"""Fixtures for the API tests: a clean rate-limit cache, uploads kept out of the repository."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile

API = "/api/v1"


@pytest.fixture(autouse=True)
def _api_setup(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    cache.clear()  # throttle counters live in the cache
    yield
    cache.clear()


def upload(text: str | bytes, name: str = "input.csv") -> SimpleUploadedFile:
    body = text.encode("utf-8") if isinstance(text, str) else text
    return SimpleUploadedFile(name, body, content_type="text/csv")


def create_form(
    client, csv_text: str, *, processor: str = "template", params: dict | None = None, **extra: Any
):
    """POST /jobs as multipart, the way a script uploads a file."""
    if params is None and processor == "template":
        params = {"template": "{name}!"}
    data = {"file": upload(csv_text), "processor": processor, "params": json.dumps(params or {})}
    headers = extra.pop("headers", {})
    data.update({k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in extra.items()})
    return client.post(f"{API}/jobs", data, format="multipart", headers=headers)


def create_json(
    client,
    rows: list[dict],
    *,
    processor: str = "template",
    params: dict | None = None,
    **extra: Any,
):
    if params is None and processor == "template":
        params = {"template": "{name}!"}
    headers = extra.pop("headers", {})
    body = {"processor": processor, "params": params or {}, "rows": rows, **extra}
    return client.post(f"{API}/jobs", body, format="json", headers=headers)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.content.decode()
    return body["error"]


@pytest.fixture
def alice_job(alice, new_job):
    """A finished three-row job of alice's (template processor), not yet run."""
    return new_job(alice, "name,text\nann,a\nbob,b\ncid,c\n")


@pytest.fixture
def fast_answers(monkeypatch):
    """The job ids the API poll's fast path answered (jobs/fast_status.py), in order."""
    from jobs import fast_status

    given = []
    real = fast_status.FastStatusMiddleware._respond

    def spy(self, request, public_id, body):
        given.append(public_id)
        return real(self, request, public_id, body)

    monkeypatch.setattr(fast_status.FastStatusMiddleware, "_respond", spy)
    return given
