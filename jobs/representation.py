"""The job object of the API contract, as a plain dict: what the API answers, what a webhook
carries, and the timestamps and links inside it.

It lives below the HTTP layer so that the engine (the webhook sender) and the API render one
object the same way without the engine importing the API.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from . import links

API_PREFIX = "/api/v1"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc(value: dt.datetime | None) -> str | None:
    """The API's timestamp: UTC, microseconds and a Z, so every client parses one format."""
    return value.astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT) if value else None


def base_url(request: HttpRequest | None) -> str:
    if request is not None:
        return request.build_absolute_uri("/").rstrip("/")
    # Outside a request (webhook payloads): the configured public address, else relative links.
    return (getattr(settings, "BATCHHUB_BASE_URL", "") or "").rstrip("/")


def job_links(public_id: str, request: HttpRequest | None = None) -> dict[str, str]:
    base = f"{base_url(request)}{API_PREFIX}/jobs/{public_id}"
    return {
        "self": base,
        "results": f"{base}/results",
        "rows": f"{base}/rows",
        "events": f"{base}/events",
    }


def results_link(job, request: HttpRequest | None = None) -> tuple[str, str | None]:
    """A signed download of the job's results (CSV) that needs no API key, and its expiry."""
    token, expiry = links.results_token(job)
    url = f"{base_url(request)}{API_PREFIX}/jobs/{job.public_id}/download?token={token}"
    return url, utc(links.expires_at(expiry))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def job_representation(job, request: HttpRequest | None = None) -> dict[str, Any]:
    """The contract's job object (what the API's JobSerializer describes), built directly.

    Every status poll returns it, and binding a DRF serializer's 28 fields per job costs more
    than the rest of the answer; tests/api/test_job_object.py checks the two agree.
    """
    error = job.error
    url, url_expiry = results_link(job, request)
    return {
        "id": _str(job.public_id),
        "name": _str(job.name),
        "processor": _str(job.processor),
        "params": job.params,
        "status": _str(job.status),
        "counts": {name: int(value) for name, value in job.counts.items()},
        "progress": float(job.progress),
        "rows_per_second": float(job.rows_per_second),
        "estimated_completion": utc(job.estimated_completion),
        "columns": None if job.columns is None else [_str(c) for c in job.columns],
        "id_column": _str(job.id_column),
        "column_map": (
            None if job.column_map is None else {str(k): _str(v) for k, v in job.column_map.items()}
        ),
        "error": None if error is None else {k: str(error[k]) for k in ("code", "message")},
        "webhook_url": _str(job.webhook_url),
        "created_at": utc(job.created_at),
        "started_at": utc(job.started_at),
        "finished_at": utc(job.finished_at),
        "updated_at": utc(job.updated_at),
        "expires_at": utc(job.expires_at),
        "links": job_links(job.public_id, request),
        "encoding": _str(job.encoding),
        "delimiter": _str(job.delimiter),
        "concurrency": None if job.concurrency is None else int(job.concurrency),
        "rate_limit": None if job.rate_limit is None else int(job.rate_limit),
        "max_attempts": None if job.max_attempts is None else int(job.max_attempts),
        "usage": job.usage,
        "pause_reason": _str(job.pause_reason),
        "resume_at": utc(job.resume_at),
        "results_url": url,
        "results_url_expires_at": url_expiry,
    }
