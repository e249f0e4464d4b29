"""`GET /jobs/{id}?include=results`: a small job's rows inside its status answer, as the
place-enrichment APIs return them, so a script polling a small job needs no second request."""

from __future__ import annotations

from typing import Any

from batchhub.api import APIError

from .. import results
from ..models import Job

MAX_EMBEDDED_ROWS = 1000
INCLUDES = ("results",)


def included(value: str | None) -> set[str]:
    wanted = {part.strip() for part in (value or "").split(",") if part.strip()}
    unknown = sorted(wanted - set(INCLUDES))
    if unknown:
        raise APIError(f"Unknown include '{unknown[0]}'.", details={"include": list(INCLUDES)})
    return wanted


def embedded_results(job: Job) -> list[dict[str, Any]]:
    """Every row object of the job in input order (as in the JSON download); 400 past the cap."""
    if job.total > MAX_EMBEDDED_ROWS:
        raise APIError(
            f"include=results is for jobs of at most {MAX_EMBEDDED_ROWS:,} rows; this one has "
            f"{job.total:,}. Download the results (links.results or results_url) instead.",
            details={"include": [f"at most {MAX_EMBEDDED_ROWS} rows"], "total": job.total},
        )
    columns = list(job.columns or [])
    return [results.row_object(columns, *row) for row in results.iter_rows(job)]
