"""Two-step upload: POST /uploads, PUT the bytes to the signed upload_url, POST /jobs {"upload"}."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import enqueue, tasks
from jobs.models import Job, Upload
from jobs.uploads import expire_uploads
from tests.api.conftest import API, assert_error

pytestmark = pytest.mark.django_db


def _start(client, **body) -> dict:
    response = client.post(f"{API}/uploads", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _put(url: str, body: bytes, content_type: str = "application/octet-stream"):
    split = urlsplit(url)
    return APIClient().generic(
        "PUT", f"{split.path}?{split.query}", body, content_type=content_type
    )


def test_upload_then_create_a_job(api_alice, run_job):
    started = _start(api_alice, filename="people.csv")
    assert started["id"].startswith("upl_") and started["status"] == "waiting"
    assert started["upload_url"].startswith(f"http://testserver{API}/uploads/{started['id']}/")

    put = _put(started["upload_url"], b"name\nann\nbob\n")
    assert put.status_code == 200, put.content
    assert put.json()["status"] == "received" and put.json()["size"] == 13

    created = api_alice.post(
        f"{API}/jobs",
        {"upload": started["id"], "processor": "template", "params": {"template": "{name}!"}},
        format="json",
    )
    assert created.status_code == 201, created.content
    job = run_job(Job.objects.get(public_id=created.json()["id"]))
    assert job.name == "people.csv" and job.succeeded == 2
    download = api_alice.get(f"{API}/jobs/{job.public_id}/results")
    assert b"".join(download.streaming_content) == (
        b"name,text,_status,_error\nann,ann!,succeeded,\nbob,bob!,succeeded,\n"
    )
    # Used up: the staged copy is gone and a second job from it is refused.
    assert api_alice.get(f"{API}/uploads/{started['id']}").json()["status"] == "used"
    again = api_alice.post(
        f"{API}/jobs", {"upload": started["id"], "processor": "sentiment"}, format="json"
    )
    assert_error(again, 409, "invalid_state")


def test_an_invalid_file_is_refused_like_a_multipart_one(api_alice):
    started = _start(api_alice, filename="bad.csv")
    _put(started["upload_url"], b"name,name\n1,2\n")

    response = api_alice.post(
        f"{API}/jobs", {"upload": started["id"], "processor": "sentiment"}, format="json"
    )

    error = assert_error(response, 400, "invalid_csv")
    assert error["details"]["errors"][0]["line"] == 1


def test_over_the_size_limit_is_413_and_nothing_is_kept(api_alice, settings):
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 1024
    started = _start(api_alice)

    assert_error(_put(started["upload_url"], b"x" * 2000), 413, "file_too_large")

    upload = Upload.objects.get(public_id=started["id"])
    assert upload.received_at is None and not upload.file
    assert not list((settings.MEDIA_ROOT / "staged" / started["id"]).glob("*"))


def test_empty_body_is_400(api_alice):
    started = _start(api_alice)
    split = urlsplit(started["upload_url"])
    response = APIClient().generic("PUT", f"{split.path}?{split.query}", b"", CONTENT_LENGTH="0")
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("earlier", [None, b"name\nold\n"])
def test_a_body_cut_short_of_its_content_length_is_400_and_not_kept(api_alice, settings, earlier):
    # A connection dropped mid-body reads as the body's end: the first 13 bytes of a declared
    # 1,000 were stored as the whole file, "received".
    started = _start(api_alice)
    if earlier is not None:
        assert _put(started["upload_url"], earlier).status_code == 200
    split = urlsplit(started["upload_url"])
    response = APIClient().generic(
        "PUT",
        f"{split.path}?{split.query}",
        b"",
        CONTENT_LENGTH="1000",
        **{"wsgi.input": io.BytesIO(b"name\nann\nbob\n")},
    )
    error = assert_error(response, 400, "invalid_request")
    assert "ended after 13 of the 1,000 bytes" in error["message"]
    upload = Upload.objects.get(public_id=started["id"])
    files = list((settings.MEDIA_ROOT / "staged" / started["id"]).glob("*"))
    if earlier is None:
        assert upload.received_at is None and not upload.file and not files
        assert api_alice.get(f"{API}/uploads/{started['id']}").json()["status"] == "waiting"
    else:
        assert [f.read_bytes() for f in files] == [earlier]
        assert upload.file.read() == earlier


def test_a_forged_or_expired_upload_url(api_alice, settings, monkeypatch):
    started = _start(api_alice)
    split = urlsplit(started["upload_url"])
    assert_error(APIClient().generic("PUT", f"{split.path}?token=x", b"a"), 404, "not_found")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + settings.BATCHHUB_UPLOAD_URL_SECONDS + 1)
    assert_error(_put(started["upload_url"], b"name\na\n"), 410, "link_expired")


def test_an_upload_not_yet_filled_cannot_make_a_job(api_alice):
    started = _start(api_alice)
    response = api_alice.post(
        f"{API}/jobs", {"upload": started["id"], "processor": "sentiment"}, format="json"
    )
    assert_error(response, 409, "invalid_state")


def test_another_users_upload_is_404(api_alice, api_bob):
    started = _start(api_alice)
    _put(started["upload_url"], b"text\nhi\n")
    assert_error(api_bob.get(f"{API}/uploads/{started['id']}"), 404, "not_found")
    response = api_bob.post(
        f"{API}/jobs", {"upload": started["id"], "processor": "sentiment"}, format="json"
    )
    assert_error(response, 404, "not_found")


def test_one_input_at_a_time(api_alice):
    response = api_alice.post(
        f"{API}/jobs",
        {"upload": "upl_x", "rows": [{"text": "a"}], "processor": "sentiment"},
        format="json",
    )
    assert_error(response, 400, "invalid_request")
    assert_error(
        api_alice.post(f"{API}/jobs", {"processor": "sentiment"}, format="json"),
        400,
        "invalid_request",
    )


def test_curls_default_content_type_is_stored_as_bytes_too(api_alice):
    # curl --data-binary sends application/x-www-form-urlencoded unless told otherwise.
    started = _start(api_alice, filename="a.csv")
    put = _put(started["upload_url"], b"text\na=b&c\n", "application/x-www-form-urlencoded")
    assert put.status_code == 200 and put.json()["size"] == 11
    upload = Upload.objects.get(public_id=started["id"])
    assert upload.file.read() == b"text\na=b&c\n"


def test_a_body_without_content_length_is_411(api_alice):
    started = _start(api_alice)
    split = urlsplit(started["upload_url"])
    response = APIClient().generic(
        "PUT",
        f"{split.path}?{split.query}",
        b"",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert_error(response, 411, "length_required")


def test_unused_uploads_expire_with_their_files(api_alice, settings):
    started = _start(api_alice)
    _put(started["upload_url"], b"text\nhi\n")
    upload = Upload.objects.get(public_id=started["id"])
    path = settings.MEDIA_ROOT / upload.file.name
    assert path.exists()

    assert expire_uploads(timezone.now()) == 0
    assert expire_uploads(upload.expires_at + timedelta(seconds=1)) == 1

    assert not path.exists() and not Upload.objects.filter(pk=upload.pk).exists()
    assert not path.parent.exists()  # its folder too


def test_expires_at_is_one_moment_the_url_has_its_own(api_alice, settings):
    # expires_at meant the URL's expiry on creation and the deletion time on GET.
    settings.BATCHHUB_UPLOAD_URL_SECONDS = 600
    started = _start(api_alice)
    fetched = api_alice.get(f"{API}/uploads/{started['id']}").json()
    upload = Upload.objects.get(public_id=started["id"])
    assert started["expires_at"] == fetched["expires_at"]
    assert started["expires_at"] == upload.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    url_until = timezone.datetime.fromisoformat(started["upload_url_expires_at"])
    assert 590 < (url_until - timezone.now()).total_seconds() <= 600
    assert url_until < upload.expires_at
    assert "upload_url_expires_at" not in fetched and "upload_url" not in fetched


def test_a_used_uploads_folder_goes_with_its_file(
    api_alice, settings, django_capture_on_commit_callbacks, monkeypatch
):
    # The commit's other callback queues the job's ingest: left in the in-memory broker, it
    # would be a message waiting for the rest of this process's tests.
    monkeypatch.setattr(enqueue, "start_ingest", lambda job_pk: None)
    started = _start(api_alice, filename="people.csv")
    _put(started["upload_url"], b"text\ngood\n")
    folder = settings.MEDIA_ROOT / "staged" / started["id"]
    assert folder.is_dir()

    with django_capture_on_commit_callbacks(execute=True):
        created = api_alice.post(
            f"{API}/jobs", {"upload": started["id"], "processor": "sentiment"}, format="json"
        )
    assert created.status_code == 201, created.content

    assert not folder.exists()
    assert not list((settings.MEDIA_ROOT / "staged").iterdir())


def test_the_hourly_sweep_removes_the_empty_folders_no_upload_will_fill(api_alice, settings):
    staged = settings.MEDIA_ROOT / "staged"
    used = _start(api_alice)
    _put(used["upload_url"], b"text\nhi\n")
    Upload.objects.filter(public_id=used["id"]).update(file="")  # used by a release that kept
    (staged / used["id"] / "input.csv").unlink()  # its folder
    (staged / "upl_deleted").mkdir()  # an upload deleted with its user
    waiting = _start(api_alice)
    (staged / waiting["id"]).mkdir()  # a PUT refused at the limit leaves it: one may come
    received = _start(api_alice)
    _put(received["upload_url"], b"text\nhi\n")

    tasks.expire_jobs()

    assert sorted(p.name for p in staged.iterdir()) == sorted([waiting["id"], received["id"]])
    assert (staged / received["id"] / "input.csv").read_bytes() == b"text\nhi\n"
