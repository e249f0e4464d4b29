"""A gzip upload whose text is over BATCHHUB_MAX_DECOMPRESSED_BYTES is a 413, not a broken file.

It used to answer 400 invalid_csv, as if the file were damaged; it is too big, and the cure is
the one for an upload over the size limit (split it), so the answer is that one's: 413
file_too_large, naming the decompressed limit. Every way in reads the upload through the same
check: multipart, validate, a two-step upload and csv_base64.
"""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from jobs.models import Job, Upload

from .conftest import API, assert_error, upload
from .test_uploads import _put, _start

pytestmark = pytest.mark.django_db

LIMIT = 100_000
TEMPLATE = {"template": "{name}!"}
BIG = b"name\n" + b"ann\n" * 60_000  # 240 KB of text, about 1 KB gzipped
SMALL = b"name\n" + b"ann\n" * 1_000


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.BATCHHUB_MAX_DECOMPRESSED_BYTES = LIMIT


def _too_large(response) -> dict:
    error = assert_error(response, 413, "file_too_large")
    assert "decompresses to more than 100,000 bytes" in error["message"]
    assert error["details"] == {"max_decompressed_bytes": LIMIT}
    assert Job.objects.count() == 0
    return error


def _multipart(client, path: str, body: bytes, name: str):
    data = {"file": upload(body, name), "processor": "template", "params": json.dumps(TEMPLATE)}
    return client.post(f"{API}/{path}", data, format="multipart")


@pytest.mark.parametrize("name", ["in.csv.gz", "in.jsonl.gz"])
def test_multipart_create_is_413(api_alice, name):
    body = BIG if name.startswith("in.csv") else b'{"name": "ann"}\n' * 20_000
    assert len(gzip.compress(body)) < LIMIT
    _too_large(_multipart(api_alice, "jobs", gzip.compress(body), name))


def test_validate_is_413(api_alice):
    _too_large(_multipart(api_alice, "jobs/validate", gzip.compress(BIG), "in.csv.gz"))


def test_a_two_step_upload_is_413_and_stays_usable(api_alice):
    started = _start(api_alice, filename="in.csv.gz")
    assert _put(started["upload_url"], gzip.compress(BIG)).status_code == 200
    response = api_alice.post(
        f"{API}/jobs",
        {"upload": started["id"], "processor": "template", "params": TEMPLATE},
        format="json",
    )
    _too_large(response)
    # Refused, not used up: a PUT of a smaller file can still make the job.
    assert Upload.objects.get(public_id=started["id"]).file


def test_csv_base64_of_a_gzip_is_413(api_alice):
    body = {
        "processor": "template",
        "params": TEMPLATE,
        "csv_base64": base64.b64encode(gzip.compress(BIG)).decode(),
    }
    _too_large(api_alice.post(f"{API}/jobs", body, format="json"))


def test_a_gzip_within_the_limit_is_still_a_job(api_alice):
    response = _multipart(api_alice, "jobs", gzip.compress(SMALL), "in.csv.gz")
    assert response.status_code == 201, response.content


def test_a_damaged_gzip_is_still_invalid_csv(api_alice):
    cut = gzip.compress(SMALL)[:-30]
    error = assert_error(_multipart(api_alice, "jobs", cut, "in.csv.gz"), 400, "invalid_csv")
    assert "gzip" in error["details"]["errors"][-1]["message"]
