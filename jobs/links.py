"""Signed links: a job's results without an API key, and a two-step upload's PUT target.

A link is a token signed with the site's SECRET_KEY (django.core.signing) naming what it opens
and until when. A results link also carries the job's `link_version`: revoking a job's links bumps
that number, so every token handed out before stops working at once, with nothing stored per link.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.http import Http404
from rest_framework import status

from batchhub.api import APIError

from . import results
from .models import Job

RESULTS_SALT = "batchhub.links.results"
UPLOAD_SALT = "batchhub.links.upload"


class LinkGone(APIError):
    """A well-signed link that no longer works: past its time, or revoked."""

    status_code = status.HTTP_410_GONE
    error_code = "link_expired"
    default_detail = "This link has expired; ask for a new one (GET the job)."


def _expiry(seconds: int) -> int:
    # Whole seconds: a job read twice in the same second gets the same link, so two renders of
    # one job object agree (tests/api/test_job_object.py compares them).
    from django.utils import timezone

    return int(timezone.now().timestamp()) + seconds


def expires_at(token_expiry: int) -> datetime:
    return datetime.fromtimestamp(token_expiry, UTC)


def results_token(
    job: Job, fmt: str = "csv", wanted: str = "all", seconds: int | None = None
) -> tuple[str, int]:
    """(token, expiry as unix seconds) for downloading `job`'s results as `fmt`."""
    expiry = _expiry(seconds or settings.BATCHHUB_LINK_SECONDS)
    return sign_results(job.public_id, fmt, wanted, job.link_version, expiry), expiry


def sign_results(public_id: str, fmt: str, wanted: str, version: int, expiry: int) -> str:
    return _signer(settings.SECRET_KEY, RESULTS_SALT).sign_object(
        [public_id, fmt, wanted, version, expiry]
    )


@lru_cache(maxsize=8)
def _signer(key: str, salt: str) -> signing.Signer:
    # Built once per key: every status poll signs a link, and a Signer's set-up costs as much as
    # the signature itself.
    return signing.Signer(key=key, salt=salt)


def open_results(public_id: str, token: str) -> tuple[Job, str, str]:
    """(job, format, status) a results token opens for the job at `public_id`.

    A token that does not verify, names another job, or whose job is gone is a 404 (nothing tells
    a guesser which it was); a genuine one past its time or revoked is a 410."""
    try:
        payload = _signer(settings.SECRET_KEY, RESULTS_SALT).unsign_object(token or "")
    except (signing.BadSignature, ValueError):
        raise Http404("No such link.") from None
    if not isinstance(payload, list) or len(payload) != 5 or payload[0] != public_id:
        raise Http404("No such link.")
    _id, fmt, wanted, version, expiry = payload
    if fmt not in results.FORMATS or wanted not in results.STATUS_FILTERS:
        raise Http404("No such link.")
    if int(expiry) <= time.time():
        raise LinkGone()
    job = Job.objects.visible().filter(public_id=public_id).first()
    if job is None:
        raise Http404("No such link.")
    if version != job.link_version:
        raise LinkGone(
            "This link was revoked; ask for a new one (GET the job).", code="link_revoked"
        )
    return job, fmt, wanted


def upload_token(upload_id: str, expiry: int) -> str:
    return _signer(settings.SECRET_KEY, UPLOAD_SALT).sign_object({"u": upload_id, "e": expiry})


def open_upload_token(upload_id: str, token: str) -> None:
    """Nothing if `token` is a live PUT token for `upload_id`; 404 if it is not one, 410 if late."""
    try:
        payload = _signer(settings.SECRET_KEY, UPLOAD_SALT).unsign_object(token or "")
    except (signing.BadSignature, ValueError):
        raise Http404("No such upload.") from None
    if not isinstance(payload, dict) or payload.get("u") != upload_id:
        raise Http404("No such upload.")
    if int(payload.get("e", 0)) <= time.time():
        raise LinkGone("This upload URL has expired; create a new upload.")


def new_upload_expiry() -> int:
    return _expiry(settings.BATCHHUB_UPLOAD_URL_SECONDS)
