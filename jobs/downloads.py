"""A job's results as a streamed download: the one response the API (keyed and signed link) and
the job page all answer with."""

from __future__ import annotations

from urllib.parse import quote

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from . import results
from .models import Job


def results_response(job: Job, fmt: str, wanted: str = "all") -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        results.stream(job, fmt, wanted), content_type=results.FORMATS[fmt]
    )
    response["Content-Disposition"] = _attachment(job, fmt, wanted)
    response["Cache-Control"] = "no-store"
    return response


def _attachment(job: Job, fmt: str, wanted: str) -> str:
    """RFC 6266: an ASCII `filename` for every client and, when the name is not ASCII, the real
    one in `filename*` (RFC 5987), which browsers prefer. Django's helper writes one or the
    other, never both."""
    name = results.filename_for(job, fmt, wanted)
    if name.isascii():
        return content_disposition_header(True, name)
    fallback = results.filename_for(job, fmt, wanted, ascii_only=True)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
