from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from jobs.models import Chunk, Job, JobEvent

from ..factories import JobFactory, UserFactory, add_rows


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def hk_owner(db):
    return UserFactory(username="hk-owner", email="o@example.com")


@pytest.fixture
def stored_job(hk_owner):
    """A finished job with rows, chunks, events and its upload in storage."""

    def make(
        *, rows: int = 5, expires_in=None, status: str = "completed", extra_file: bool = False
    ) -> Job:
        now = timezone.now()
        job = JobFactory(
            owner=hk_owner,
            columns=["a"],
            rows=rows,
            status=status,
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
        add_rows(job, rows, data=lambda i: [f"x{i}"])
        Chunk.objects.create(job=job, seq=0, start=0, end=rows, done=True)
        JobEvent.objects.create(job=job, type="completed", message="done")
        return job

    return make
