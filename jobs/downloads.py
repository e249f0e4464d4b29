"""A job's results as a streamed download: the one response the API (keyed and signed link) and
the job page all answer with."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from . import results
from .models import Job


def results_response(job: Job, fmt: str, wanted: str = "all") -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        results.stream(job, fmt, wanted), content_type=results.FORMATS[fmt]
    )
    response["Content-Disposition"] = content_disposition_header(
        True, results.filename_for(job, fmt, wanted)
    )
    response["Cache-Control"] = "no-store"
    return response
