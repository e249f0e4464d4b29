from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.utils import timezone

from jobs.models import Chunk, Job, JobEvent, Row, RowStatus


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def hk_owner(db):
    return get_user_model().objects.create_user("hk-owner", "o@example.com", "pw-owner-123")


@pytest.fixture
def stored_job(hk_owner):
    """A finished job with rows, chunks, events and its upload in storage."""

    def make(
        *, rows: int = 5, expires_in=None, status: str = "completed", extra_file: bool = False
    ) -> Job:
        now = timezone.now()
        job = Job.objects.create(
            owner=hk_owner,
            processor="template",
            params={"template": "{a}"},
            columns=["a"],
            status=status,
            total=rows,
            succeeded=rows,
            finished_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        job.input_file.save(
            "input.csv", ContentFile(b"a\n" + b"".join(b"x%d\n" % i for i in range(rows)))
        )
        if extra_file:
            job.input_file.storage.save(
                f"uploads/{job.public_id}/decoded.csv", ContentFile(b"a\nx\n")
            )
        Row.objects.bulk_create(
            Row(job=job, index=i, ref=str(i + 1), data=[f"x{i}"], status=RowStatus.SUCCEEDED)
            for i in range(rows)
        )
        Chunk.objects.create(job=job, seq=0, start=0, end=rows, done=True)
        JobEvent.objects.create(job=job, type="completed", message="done")
        return job

    return make
