"""Run a job again with the same settings: its input becomes a new draft on the new-job page.

The page opens with the job's processor, params, column map and options filled in, so the
person sees what will run and can change anything before pressing Start; nothing is created
until then (the same path as a fresh upload, with the same checks).
"""

from __future__ import annotations

from typing import Any

from django.core.files.base import File

from batchhub.api import APIError

from . import drafts
from .models import Job

JOB_FIELDS = ("id_column", "webhook_url", "concurrency", "rate_limit")


def draft_from(user, job: Job) -> str:
    """A new draft holding a copy of the job's input; its token. APIError if the input is gone
    or no longer readable."""
    if not job.input_file:
        raise APIError("This job's input file is no longer kept, so it cannot be run again.")
    try:
        fh = job.input_file.open("rb")
    except (FileNotFoundError, OSError):
        raise APIError(
            "This job's input file is no longer kept, so it cannot be run again."
        ) from None
    name = job.input_file.name.rsplit("/", 1)[-1]
    try:
        return drafts.from_upload(user, File(fh, name=name)).token
    finally:
        fh.close()


def form_data(job: Job) -> dict[str, Any]:
    """The job's settings as the new-job page's field values (param-*, map-*, options)."""
    data: dict[str, Any] = {"processor": job.processor, "name": f"{job} (again)"[:200]}
    for name in JOB_FIELDS:
        value = getattr(job, name)
        if value not in (None, ""):
            data[name] = value
    for key, value in (job.params or {}).items():
        data[f"param-{key}"] = value
    for key, value in (job.column_map or {}).items():
        data[f"map-{key}"] = value
    return data
