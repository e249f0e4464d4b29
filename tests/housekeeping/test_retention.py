"""Retention: expired jobs vanish at once for users; the sweep deletes their rows and files."""

from __future__ import annotations

import os
from datetime import timedelta

from django.core.files.storage import default_storage
from django.utils import timezone

from jobs import housekeeping
from jobs.models import Chunk, Job, JobEvent, Row


def leftovers(job_pk: int) -> dict[str, int]:
    return {
        "jobs": Job.objects.filter(pk=job_pk).count(),
        "rows": Row.objects.filter(job_id=job_pk).count(),
        "chunks": Chunk.objects.filter(job_id=job_pk).count(),
        "events": JobEvent.objects.filter(job_id=job_pk).count(),
    }


def test_expired_job_is_gone_with_rows_chunks_events_and_file(stored_job, settings):
    expired = stored_job(rows=7, expires_in=timedelta(seconds=-1), extra_file=True)
    kept = stored_job(rows=3, expires_in=timedelta(days=1))
    forever = stored_job(rows=2, status="processing")  # not finished: no expiry yet
    path = expired.input_file.path
    folder = os.path.dirname(path)
    assert os.path.exists(path) and len(os.listdir(folder)) == 2

    assert housekeeping.expire_jobs() == 1

    assert leftovers(expired.pk) == {"jobs": 0, "rows": 0, "chunks": 0, "events": 0}
    assert not os.path.exists(path) and not os.path.exists(folder)
    assert not default_storage.exists(expired.input_file.name)
    assert leftovers(kept.pk) == {"jobs": 1, "rows": 3, "chunks": 1, "events": 1}
    assert default_storage.exists(kept.input_file.name)
    assert leftovers(forever.pk)["rows"] == 2
    assert housekeeping.expire_jobs() == 0  # nothing left to do


def test_expired_job_is_invisible_before_the_sweep(stored_job):
    expired = stored_job(expires_in=timedelta(seconds=-1))
    kept = stored_job(expires_in=timedelta(hours=1))
    visible = set(Job.objects.visible().values_list("pk", flat=True))
    assert expired.pk not in visible and kept.pk in visible


def test_expired_job_url_is_404(stored_job, client, hk_owner, settings):
    """The site and the API hide an expired job even before the sweep deletes it."""
    settings.ROOT_URLCONF = "batchhub.urls"
    expired = stored_job(expires_in=timedelta(seconds=-1))
    kept = stored_job(expires_in=timedelta(hours=1))
    client.force_login(hk_owner)
    assert client.get(f"/api/v1/jobs/{kept.public_id}").status_code == 200
    response = client.get(f"/api/v1/jobs/{expired.public_id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert [j["id"] for j in client.get("/api/v1/jobs").json()["results"]] == [kept.public_id]
    assert client.get(f"/jobs/{kept.public_id}/").status_code == 200
    assert client.get(f"/jobs/{expired.public_id}/").status_code == 404
    assert expired.public_id not in client.get("/").content.decode()

    housekeeping.expire_jobs()
    assert client.get(f"/api/v1/jobs/{expired.public_id}").status_code == 404
    assert client.get(f"/jobs/{expired.public_id}/").status_code == 404


def test_deleting_through_the_api_removes_rows_and_file(stored_job, client, hk_owner, settings):
    settings.ROOT_URLCONF = "batchhub.urls"
    job = stored_job(rows=6)
    name = job.input_file.name
    client.force_login(hk_owner)
    assert client.delete(f"/api/v1/jobs/{job.public_id}").status_code == 204
    assert leftovers(job.pk) == {"jobs": 0, "rows": 0, "chunks": 0, "events": 0}
    assert not default_storage.exists(name)


def test_sweep_uses_now_argument(stored_job):
    job = stored_job(expires_in=timedelta(days=2))
    assert housekeeping.expire_jobs(now=timezone.now() + timedelta(days=1)) == 0
    assert housekeeping.expire_jobs(now=timezone.now() + timedelta(days=3)) == 1
    assert leftovers(job.pk)["jobs"] == 0


def test_rows_are_deleted_in_batches(stored_job, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(housekeeping, "ROW_BATCH", 4)
    job = stored_job(rows=10)
    with django_assert_num_queries(4):  # the highest index, then 3 DELETEs of 4, 4 and 2 rows
        assert housekeeping.delete_rows(job.pk) == 10
    assert Row.objects.filter(job=job).count() == 0
    assert housekeeping.delete_rows(job.pk) == 0


def test_purge_job_removes_file_rows_and_job(stored_job):
    job = stored_job(rows=4)
    name = job.input_file.name
    housekeeping.purge_job(job)
    assert leftovers(job.pk) == {"jobs": 0, "rows": 0, "chunks": 0, "events": 0}
    assert not default_storage.exists(name)


def test_purge_job_without_file(hk_owner):
    job = Job.objects.create(owner=hk_owner, processor="template", params={"template": "{a}"})
    housekeeping.purge_job(job)
    assert not Job.objects.filter(pk=job.pk).exists()


def test_one_broken_job_does_not_stop_the_sweep(stored_job, monkeypatch):
    first = stored_job(expires_in=timedelta(minutes=-2))
    second = stored_job(expires_in=timedelta(minutes=-1))
    real = housekeeping.delete_job_files

    def flaky(job):
        if job.pk == first.pk:
            raise OSError("storage unavailable")
        return real(job)

    monkeypatch.setattr(housekeeping, "delete_job_files", flaky)
    assert housekeeping.expire_jobs() == 1
    assert leftovers(first.pk)["jobs"] == 1  # kept for the next sweep, still invisible
    assert leftovers(second.pk)["jobs"] == 0
    assert not Job.objects.visible().filter(pk=first.pk).exists()


def test_expiry_for_uses_retention_setting(settings):
    settings.BATCHHUB_RETENTION_DAYS = 7
    now = timezone.now()
    assert housekeeping.expiry_for(now) == now + timedelta(days=7)
