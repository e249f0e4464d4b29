"""The OpenAPI description of the jobs and processors API, kept apart from the views' code.

Each viewset takes its operations' descriptions with one class decorator (`extend_schema_view`),
so a view reads as what it does and this module as what a client is promised.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)

from apikeys.api import ErrorSerializer

from .. import results
from ..models import JobStatus
from . import embed
from .serializers import (
    JobCreateFormSerializer,
    JobCreateJSONSerializer,
    JobEventSerializer,
    JobRenameSerializer,
    JobSerializer,
    JobValidateFormSerializer,
    JobValidateJSONSerializer,
    JobWithResultsSerializer,
    ProcessorSerializer,
    RetrySerializer,
    RowObjectSerializer,
    ValidationReportSerializer,
)

# --- pieces shared by the operations (links.py and uploads.py use them too) -----------------------


def error_response(description: str) -> OpenApiResponse:
    """An error status: the contract's error body, and which codes it carries when."""
    return OpenApiResponse(ErrorSerializer, description=description)


COMMON_ERRORS = {
    401: error_response("not_authenticated: missing, unknown, expired or revoked key."),
    429: error_response(
        "rate_limited: too many requests in this endpoint group; see the Retry-After header."
    ),
}
NOT_FOUND = {404: error_response("not_found: no such job (or not yours).")}
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before trying again (rate_limited, quota_exceeded).",
)
JOB_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The job's id (job_…)."
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Repeat-safe creation: the same key and body within 24 hours returns the first "
    "job (200); "
    "the same key with a different body is a 409.",
)
JOB_INPUT_REQUEST = {
    "multipart/form-data": JobCreateFormSerializer,
    "application/json": JobCreateJSONSerializer,
}
VALIDATE_REQUEST = {
    "multipart/form-data": JobValidateFormSerializer,
    "application/json": JobValidateJSONSerializer,
}
INPUT_ERRORS = {
    400: error_response(
        "invalid_csv (unreadable or invalid input; details.errors lists the problems) or "
        "invalid_request (unknown processor, bad params or fields, or params naming a saved "
        "credential you have not got; details.params names the param)."
    ),
    413: error_response(
        "file_too_large: the upload is over the size limit, or a gzip upload's text is over the "
        "decompressed limit (details.max_bytes or details.max_decompressed_bytes)."
    ),
    415: error_response("unsupported_media_type: send multipart/form-data or application/json."),
}


# --- the operations, one decorator per viewset -------------------------------------------------

processor_schema = extend_schema_view(
    list=extend_schema(
        operation_id="processors_list",
        summary="List processors",
        description="Everything a row can be processed with. Not paginated.",
        responses={200: ProcessorSerializer(many=True), **COMMON_ERRORS},
        tags=["processors"],
    ),
    retrieve=extend_schema(
        operation_id="processors_retrieve",
        summary="Describe a processor",
        parameters=[OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={
            200: ProcessorSerializer,
            404: error_response("not_found: no such processor."),
            **COMMON_ERRORS,
        },
        tags=["processors"],
    ),
)


job_schema = extend_schema_view(
    list=extend_schema(
        operation_id="jobs_list",
        summary="List jobs",
        description="Your jobs, newest first.",
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                enum=[*JobStatus.values, "active"],
                description="A status, or `active` for every status that is not terminal.",
            ),
            OpenApiParameter(
                "processor", OpenApiTypes.STR, description="Only jobs of this processor."
            ),
        ],
        responses={
            200: JobSerializer(many=True),
            400: error_response("invalid_request: unknown status."),
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    create=extend_schema(
        operation_id="jobs_create",
        summary="Create a job",
        description=(
            "Creates a job from an uploaded file (multipart) or a list of row objects (JSON) and "
            "starts it. Invalid input creates nothing. `concurrency`, `rate_limit` and "
            "`max_attempts` "
            "are optional extras."
        ),
        parameters=[IDEMPOTENCY_KEY, RETRY_AFTER],
        request=JOB_INPUT_REQUEST,
        responses={
            201: OpenApiResponse(JobSerializer, description="Created and started."),
            200: OpenApiResponse(
                JobSerializer, description="An Idempotency-Key repeat: the first job."
            ),
            **INPUT_ERRORS,
            409: error_response(
                "idempotency_conflict: the Idempotency-Key was used with a different request."
            ),
            413: error_response(
                "file_too_large: the upload is over the size limit, or a gzip upload's text over "
                "the decompressed limit; or too_many_rows: the input has more rows than a job may "
                "hold (details.max). Not retryable: split the input."
            ),
            **COMMON_ERRORS,
            429: error_response(
                "rate_limited: too many requests; or quota_exceeded: the user has as many active "
                "jobs as allowed (details.max). Both carry Retry-After: for quota_exceeded, when "
                "the soonest running job should end."
            ),
        },
        examples=[
            OpenApiExample(
                "JSON rows",
                value={
                    "processor": "sentiment",
                    "params": {},
                    "name": "reviews",
                    "rows": [{"text": "I love it"}, {"text": "Meh."}],
                },
                request_only=True,
                media_type="application/json",
            )
        ],
        tags=["jobs"],
    ),
    validate=extend_schema(
        operation_id="jobs_validate",
        summary="Check input without creating a job",
        description=(
            "Reads and checks the input exactly as job creation would, and creates nothing. "
            "Invalid "
            "input is a 200 with `valid: false` and the problems in `errors`; input over a size "
            "limit (a gzip's text included) is a 413, as at creation. With `sample: N` "
            "(1 to 10) the processor also runs on the first N rows."
        ),
        request=VALIDATE_REQUEST,
        responses={200: ValidationReportSerializer, **INPUT_ERRORS, **COMMON_ERRORS},
        tags=["jobs"],
    ),
    retrieve=extend_schema(
        operation_id="jobs_retrieve",
        summary="Get a job",
        description="With `?include=results`, a job of at most 1,000 rows also carries `results`: "
        "its row objects in input order, as in the JSON download (more rows: a 400).",
        parameters=[
            JOB_ID,
            OpenApiParameter("include", OpenApiTypes.STR, enum=[*embed.INCLUDES]),
        ],
        responses={
            200: JobWithResultsSerializer,
            400: error_response("invalid_request: unknown include, or results of over 1,000 rows."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    partial_update=extend_schema(
        operation_id="jobs_partial_update",
        summary="Rename a job",
        description="Only `name` can be changed; any other field is a 400.",
        parameters=[JOB_ID],
        request=JobRenameSerializer,
        responses={
            200: JobSerializer,
            400: error_response("invalid_request: bad name, or a field other than name."),
            **NOT_FOUND,
            415: error_response("unsupported_media_type: send application/json."),
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    destroy=extend_schema(
        operation_id="jobs_destroy",
        summary="Delete a job",
        description="Cancels the job if it is running, then deletes it with its rows and files.",
        parameters=[JOB_ID],
        responses={204: OpenApiResponse(description="Deleted."), **NOT_FOUND, **COMMON_ERRORS},
        tags=["jobs"],
    ),
    pause=extend_schema(
        operation_id="jobs_pause",
        summary="Pause a job",
        description="No new rows start; rows already running finish and keep their results.",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: JobSerializer,
            409: error_response("invalid_state: the job cannot be paused now."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    resume=extend_schema(
        operation_id="jobs_resume",
        summary="Resume a paused job",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: JobSerializer,
            409: error_response("invalid_state: the job is not paused."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    cancel=extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel a job",
        description="Rows not started are cancelled; rows already running finish and keep "
        "their results.",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: JobSerializer,
            409: error_response("invalid_state: the job has already finished."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    retry=extend_schema(
        operation_id="jobs_retry",
        summary="Retry failed rows",
        description=(
            "Failed rows (all, or those named in `rows`) go back to pending and the job processes "
            "again. Row ids are `row_<n>` (n is the `row` number of the row objects)."
        ),
        parameters=[JOB_ID],
        request=RetrySerializer,
        responses={
            200: JobSerializer,
            400: error_response("invalid_request: a malformed or unknown row id."),
            409: error_response(
                "invalid_state: the job is not finished or paused, or has no failed rows."
            ),
            415: error_response("unsupported_media_type: send application/json."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    results=extend_schema(
        operation_id="jobs_results",
        summary="Download results",
        description=(
            "Streams every row in input order, at any time (partial while the job runs). CSV: the "
            "input columns, then the processor's output columns, then `_status` and `_error`, "
            "each header name once (an output named like an input column becomes `output.<name>`, "
            "an input column named `_status` or `_error` becomes `input.<name>`); cells "
            "a spreadsheet would run as formulas get a leading apostrophe. JSONL/JSON: one row "
            "object per row."
        ),
        parameters=[
            JOB_ID,
            OpenApiParameter("format", OpenApiTypes.STR, enum=[*results.FORMATS], default="csv"),
            OpenApiParameter(
                "status", OpenApiTypes.STR, enum=[*results.STATUS_FILTERS], default="all"
            ),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="format=csv"),
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="format=jsonl: one row object per line."
            ),
            (200, "application/json"): OpenApiResponse(
                RowObjectSerializer(many=True), description="format=json"
            ),
            (400, "application/json"): error_response("invalid_request: unknown format or status."),
            (404, "application/json"): NOT_FOUND[404],
            (401, "application/json"): COMMON_ERRORS[401],
            (429, "application/json"): COMMON_ERRORS[429],
        },
        tags=["jobs"],
    ),
    rows=extend_schema(
        operation_id="jobs_rows",
        summary="List a job's rows",
        description="Row objects as in the JSONL download, in input order.",
        parameters=[
            JOB_ID,
            OpenApiParameter(
                "status", OpenApiTypes.STR, enum=[*results.ROW_STATUS_FILTERS], default="all"
            ),
        ],
        responses={
            200: RowObjectSerializer(many=True),
            400: error_response("invalid_request: unknown status."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    ),
    events=extend_schema(
        operation_id="jobs_events",
        summary="A job's timeline",
        description="Stage changes, pause/resume/cancel with who asked, retries and webhook "
        "deliveries, oldest first.",
        parameters=[JOB_ID],
        responses={200: JobEventSerializer(many=True), **NOT_FOUND, **COMMON_ERRORS},
        tags=["jobs"],
    ),
)
