"""The dashboard's upload refuses an oversized body like the API does: before storing any of it."""

from __future__ import annotations

import gzip
import io
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.test import Client
from django.urls import reverse

from jobs.models import Job
from jobs.upload import FORM_ALLOWANCE

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_limit(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 64 * 1024
    return settings.BATCHHUB_MAX_UPLOAD_BYTES


@pytest.fixture
def spooled(monkeypatch):
    """Bytes the temporary-file handler (the one that writes uploads to disk) received."""
    received = []
    original = TemporaryFileUploadHandler.receive_data_chunk

    def counting(self, raw_data, start):
        received.append(len(raw_data))
        return original(self, raw_data, start)

    monkeypatch.setattr(TemporaryFileUploadHandler, "receive_data_chunk", counting)
    return received


def _no_drafts(tmp_path) -> bool:
    drafts = tmp_path / "media" / "drafts"
    return not drafts.exists() or not any(p.is_file() for p in drafts.rglob("*"))


def test_a_body_declared_over_the_limit_is_refused_unread(
    client_alice, small_limit, spooled, tmp_path
):
    body = b"name\n" + b"x" * (small_limit + FORM_ALLOWANCE + 1024)
    started = time.monotonic()
    response = client_alice.post(
        reverse("jobs:new"),
        {"file": SimpleUploadedFile("big.csv", body), "action": "upload"},
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 413
    page = response.content.decode()
    assert "The upload is larger than the limit of 65,536 bytes." in page
    assert spooled == []  # not a byte reached the handler that writes to disk
    assert _no_drafts(tmp_path)
    assert Job.objects.count() == 0
    assert elapsed < 5


def test_a_file_over_the_limit_within_the_allowance_stops_at_the_limit(
    client_alice, small_limit, spooled, tmp_path
):
    body = b"name\n" + b"x" * (small_limit * 4)
    response = client_alice.post(
        reverse("jobs:new"),
        {"action": "upload", "file": SimpleUploadedFile("big.csv", body)},
    )

    assert response.status_code == 413
    assert "larger than the limit" in response.content.decode()
    assert sum(spooled) <= small_limit  # reading stopped at the limit
    assert _no_drafts(tmp_path)
    assert Job.objects.count() == 0


def test_the_guard_keeps_csrf_protection(alice, small_limit):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        reverse("jobs:new"),
        {"action": "upload", "file": SimpleUploadedFile("ok.csv", b"name\nann\n")},
    )
    assert response.status_code == 403


def test_an_upload_within_the_limit_still_works(client_alice, small_limit):
    response = client_alice.post(
        reverse("jobs:new"),
        {"action": "upload", "file": SimpleUploadedFile("ok.csv", b"name\nann\n")},
    )
    assert response.status_code == 302


def test_a_deep_jsonl_upload_shows_the_line_instead_of_a_500(client_alice, small_limit):
    deep = "[" * 10_000 + "]" * 10_000
    body = ('{"name": "ann"}\n{"name": ' + deep + "}\n").encode()
    response = client_alice.post(
        reverse("jobs:new"),
        {"action": "upload", "file": SimpleUploadedFile("deep.jsonl", io.BytesIO(body).read())},
    )
    assert response.status_code == 302
    page = client_alice.get(response["Location"]).content.decode()
    assert "Line 2 is nested more than 64 levels deep" in page
    assert Job.objects.count() == 0


def test_a_decompression_bomb_through_the_page_is_refused_fast(client_alice, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    member = gzip.compress(b"\n" * (1 << 20), 9)
    body = gzip.compress(b"name,text\nann,hi\n") + member * 1100  # 1.1 GB of blank lines
    started = time.monotonic()
    response = client_alice.post(
        reverse("jobs:new"),
        {"action": "upload", "file": SimpleUploadedFile("bomb.csv.gz", body)},
    )
    # Refused at step 1: the upload form again, with the reason, and no draft to go on with.
    assert response.status_code == 400
    page = response.content.decode()
    assert time.monotonic() - started < 5
    assert "more than 1,000,000 blank lines" in page
    assert Job.objects.count() == 0
