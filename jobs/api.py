"""The REST API for processors and jobs (`/api/v1/`), to the contract in API.md.

Views are thin: every action is a `jobs.services` call, so the API does what the site does. The
services raise `batchhub.api.APIError` subclasses, which the project's exception handler renders
as the contract's error body; these views only parse requests and shape responses.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.urls import Resolver404, resolve
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.api import ErrorSerializer
from batchhub import jsonsafe
from batchhub.api import APIError, FileTooLarge, LimitOffsetPagination, error_body
from batchhub.parsers import BoundedJSONParser

from . import embed, input_shapes, results, services
from .downloads import results_response
from .models import JobEvent, JobStatus, Row, RowStatus
from .processors import all_processors, get_processor_class
from .representation import (
    TIMESTAMP_FORMAT,
    job_links,
    job_representation,
    results_link,
)
from .sample import run_sample
from .upload import UploadLimit

MAX_SAMPLE = 10
MAX_RETRY_IDS = 10_000

ROW_STATUS_FILTERS = ("all", *RowStatus.values)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and "\x00" in value:
        raise APIError(
            f"{name} must not contain NUL characters.", details={name: ["NUL character"]}
        )
    return value


# --- fields --------------------------------------------------------------------------------------


class UTCDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC with a Z and microseconds, whatever the server's time zone."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("default_timezone", dt.UTC)
        kwargs.setdefault("format", TIMESTAMP_FORMAT)
        super().__init__(**kwargs)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.Field):
    """A JSON object (in an application/json body)."""

    default_error_messages = {
        "not_object": "Must be a JSON object.",
        "not_json": "Not valid JSON: {error}.",
        "bounds": "The JSON {error}.",
        "nul": "Must not contain NUL characters.",
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("not_object")
        if _has_nul(data):
            # PostgreSQL cannot store U+0000 in text or jsonb: refuse it here, not fail there.
            self.fail("nul")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {"type": "string", "description": "A JSON object, encoded as a string.", "example": "{}"}
)
class JSONObjectStringField(JSONObjectField):
    """A JSON object sent as a string: how a multipart form carries one."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, str):
            if not data.strip():
                return {}
            try:
                data = jsonsafe.loads(data)
            except jsonsafe.JSONLimitError as exc:
                self.fail("bounds", error=exc.phrase())
            except ValueError as exc:
                self.fail("not_json", error=exc)
        return super().to_internal_value(data)


# --- output serializers --------------------------------------------------------------------------


class CountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class JobErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class JobLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    results = serializers.URLField()
    rows = serializers.URLField()
    events = serializers.URLField()


class JobSerializer(serializers.Serializer):
    """The job object of the contract, plus a few read-only extras (after `links`)."""

    id = serializers.CharField(source="public_id", help_text="job_<ULID>")
    name = serializers.CharField()
    processor = serializers.CharField()
    params = JSONObjectField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    counts = CountsSerializer()
    progress = serializers.FloatField(help_text="(succeeded + failed + cancelled) / total, 0 to 1.")
    rows_per_second = serializers.FloatField(help_text="Recent processing rate (last ~30 s).")
    estimated_completion = UTCDateTimeField(allow_null=True)
    columns = serializers.ListField(child=serializers.CharField())
    id_column = serializers.CharField(allow_null=True)
    column_map = serializers.DictField(child=serializers.CharField())
    error = JobErrorSerializer(allow_null=True)
    webhook_url = serializers.CharField(allow_null=True)
    created_at = UTCDateTimeField()
    started_at = UTCDateTimeField(allow_null=True)
    finished_at = UTCDateTimeField(allow_null=True)
    updated_at = UTCDateTimeField()
    expires_at = UTCDateTimeField(
        allow_null=True, help_text="When the job and its results are deleted."
    )
    links = serializers.SerializerMethodField()
    # Extras beyond the contract's shape.
    encoding = serializers.CharField(help_text="Detected text encoding of the input, e.g. utf-8.")
    delimiter = serializers.CharField(help_text="Detected CSV delimiter; empty for JSONL and rows.")
    concurrency = serializers.IntegerField()
    rate_limit = serializers.IntegerField(
        allow_null=True, help_text="Requests per minute, all workers; null: none."
    )
    max_attempts = serializers.IntegerField()
    usage = JSONObjectField(help_text="Usage totals the processor reports, e.g. LLM tokens.")
    pause_reason = serializers.CharField()
    resume_at = UTCDateTimeField(
        allow_null=True, help_text="When an auto-paused job resumes by itself."
    )
    results_url = serializers.SerializerMethodField(
        help_text="Signed link to the results as CSV, usable without an API key until "
        "results_url_expires_at (a new one with each read); revoke all with POST "
        "/jobs/{id}/revoke-links."
    )
    results_url_expires_at = serializers.SerializerMethodField()

    @extend_schema_field(JobLinksSerializer)
    def get_links(self, job) -> dict[str, str]:
        return job_links(job.public_id, self.context.get("request"))

    @extend_schema_field(OpenApiTypes.URI)
    def get_results_url(self, job) -> str:
        return results_link(job, self.context.get("request"))[0]

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_results_url_expires_at(self, job) -> str | None:
        return results_link(job, self.context.get("request"))[1]


class ProcessorSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    inputs = serializers.ListField(
        child=serializers.CharField(),
        help_text="Logical inputs; map columns to them with column_map.",
    )
    outputs = serializers.ListField(
        child=serializers.CharField(), help_text="Output columns added to the results."
    )
    params_schema = JSONObjectField(help_text="JSON Schema of the processor's params.")


class RowObjectSerializer(serializers.Serializer):
    """One row as in the JSONL download."""

    row = serializers.IntegerField(help_text="1-based position in the input; its id is row_<row>.")
    ref = serializers.CharField(help_text="The value of the id column, or the row number.")
    status = serializers.ChoiceField(choices=RowStatus.choices)
    input = JSONObjectField()
    output = JSONObjectField(allow_null=True)
    error = serializers.CharField(allow_null=True)


class JobWithResultsSerializer(JobSerializer):
    results = RowObjectSerializer(
        many=True, required=False, help_text="Only with ?include=results: every row object."
    )


class JobEventSerializer(serializers.ModelSerializer):
    at = UTCDateTimeField()

    class Meta:
        model = JobEvent
        fields = ["at", "type", "message", "actor"]
        read_only_fields = fields


class ValidationReportSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    row_count = serializers.IntegerField()
    columns = serializers.ListField(child=serializers.CharField())
    errors = serializers.ListField(
        child=inline_serializer(
            "InputProblem",
            {
                "line": serializers.IntegerField(allow_null=True),
                "column": serializers.IntegerField(allow_null=True),
                "message": serializers.CharField(),
            },
        ),
        help_text="At most 100 problems, in input order.",
    )
    preview = serializers.ListField(
        child=JSONObjectField(), help_text="The first 10 rows as objects."
    )
    format = serializers.CharField(help_text="csv, jsonl or rows.")
    encoding = serializers.CharField(allow_null=True)
    delimiter = serializers.CharField(allow_null=True)
    sample = serializers.ListField(
        child=inline_serializer(
            "SampleRow",
            {
                "row": serializers.IntegerField(),
                "input": JSONObjectField(),
                "output": JSONObjectField(allow_null=True),
                "error": serializers.CharField(allow_null=True),
            },
        ),
        required=False,
        help_text="Only when `sample` was asked for: the processor's output for the first rows.",
    )


# --- input serializers ---------------------------------------------------------------------------


class _JobInputBase(serializers.Serializer):
    processor = serializers.CharField(
        max_length=100, help_text="A processor name from GET /processors."
    )
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="Defaults to the file name."
    )
    id_column = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="A column whose values identify rows (unique, non-empty): each row's ref.",
    )
    webhook_url = serializers.CharField(
        max_length=1000,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="POSTed to when the job finishes (public http/https URL).",
    )
    concurrency = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Rows in flight at once (extra)."
    )
    rate_limit = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="Requests per minute across all workers (extra).",
    )
    max_attempts = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=20,
        help_text="Tries per row before it fails (extra).",
    )


class JobCreateJSONSerializer(_JobInputBase):
    params = JSONObjectField(
        required=False, default=dict, help_text="The processor's params (see its params_schema)."
    )
    column_map = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        default=dict,
        help_text="Processor input → column name.",
    )
    rows = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="The table: a list of row objects (column → value). Send exactly one of rows, "
        "upload, csv_base64 or documents.",
    )
    # The other input shapes (jobs/input_shapes.py turns each into a file or rows).
    upload = serializers.CharField(
        max_length=40,
        required=False,
        help_text="The id (upl_…) of a two-step upload whose file was PUT to its upload_url.",
    )
    csv_base64 = serializers.CharField(
        required=False, help_text="A whole CSV (or JSONL) file, base64-encoded."
    )
    documents = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="Document objects (field → value), or strings (each becomes a `text` field).",
    )
    column_mapping = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="Another name for column_map (processor input → field), as documents use.",
    )
    job_id = serializers.CharField(
        max_length=200,
        required=False,
        help_text="A client-chosen id for this request: a repeat with the same job_id and body "
        "returns the first job, as the Idempotency-Key header does.",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        return input_shapes.check_one_input(data)


class JobCreateFormSerializer(_JobInputBase):
    file = serializers.FileField(help_text="CSV, gzip-compressed CSV, or JSONL.")
    params = JSONObjectStringField(
        required=False, default=dict, help_text="The processor's params as a JSON string."
    )
    column_map = JSONObjectStringField(
        required=False, default=dict, help_text="Processor input → column name, as a JSON string."
    )


def _sample_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_SAMPLE,
        default=0,
        help_text="Run the processor on this many first rows and return its output (0 to 10).",
    )


class JobValidateJSONSerializer(JobCreateJSONSerializer):
    sample = _sample_field()


class JobValidateFormSerializer(JobCreateFormSerializer):
    sample = _sample_field()


class JobRenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class RetrySerializer(serializers.Serializer):
    rows = serializers.ListField(
        child=serializers.CharField(max_length=20),
        required=False,
        allow_empty=False,
        max_length=MAX_RETRY_IDS,
        help_text="Row ids (row_<n>) to retry; omitted: every failed row.",
    )


# --- schema helpers ------------------------------------------------------------------------------


def _err(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


COMMON_ERRORS = {
    401: _err("not_authenticated: missing, unknown, expired or revoked key."),
    429: _err(
        "rate_limited: too many requests in this endpoint group; see the Retry-After header."
    ),
}
NOT_FOUND = {404: _err("not_found: no such job (or not yours).")}
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
    400: _err(
        "invalid_csv (unreadable or invalid input; details.errors lists the problems) or "
        "invalid_request (unknown processor, bad params or fields)."
    ),
    413: _err("file_too_large: the upload is over the size limit."),
    415: _err("unsupported_media_type: send multipart/form-data or application/json."),
}


# --- views ---------------------------------------------------------------------------------------


class ProcessorViewSet(viewsets.ViewSet):
    pagination_class = None
    throttle_group = "read"

    @extend_schema(
        operation_id="processors_list",
        summary="List processors",
        description="Everything a row can be processed with. Not paginated.",
        responses={200: ProcessorSerializer(many=True), **COMMON_ERRORS},
        tags=["processors"],
    )
    def list(self, request: Request) -> Response:
        return Response([cls.describe() for cls in all_processors()])

    @extend_schema(
        operation_id="processors_retrieve",
        summary="Describe a processor",
        parameters=[OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={
            200: ProcessorSerializer,
            404: _err("not_found: no such processor."),
            **COMMON_ERRORS,
        },
        tags=["processors"],
    )
    def retrieve(self, request: Request, name: str) -> Response:
        cls = get_processor_class(name)
        if cls is None:
            raise Http404("No such processor.")
        return Response(cls.describe())


class _KnownCountPagination(LimitOffsetPagination):
    """Offset pagination over a job's rows whose total comes from the job's counters.

    With `by_index`, the page is the rows whose index is in [offset, offset + limit): a range scan
    of the (job, index) index, as fast at the end of a million rows as at the start, where an
    SQL OFFSET would walk past every earlier row.
    """

    def __init__(self, count: int, *, by_index: bool = False):
        self.known_count = count
        self.by_index = by_index

    def get_count(self, queryset) -> int:
        return self.known_count

    def paginate_queryset(self, queryset, request, view=None):
        if not self.by_index:
            return super().paginate_queryset(queryset, request, view)
        self.limit = self.get_limit(request)
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(request)
        self.request = request
        if self.count == 0 or self.offset >= self.count:
            return []
        return list(queryset.filter(index__gte=self.offset, index__lt=self.offset + self.limit))


class JobViewSet(viewsets.GenericViewSet):
    pagination_class = LimitOffsetPagination
    parser_classes = [BoundedJSONParser, MultiPartParser]
    serializer_class = JobSerializer
    throttle_groups = {
        "list": "read",
        "retrieve": "read",
        "rows": "read",
        "events": "read",
        "create": "create",
        "validate": "create",
        "partial_update": "control",
        "destroy": "control",
        "pause": "control",
        "resume": "control",
        "cancel": "control",
        "retry": "control",
        "results": "download",
    }

    # --- request plumbing ---------------------------------------------------------------------

    def initialize_request(self, request, *args: Any, **kwargs: Any) -> Request:
        drf_request = super().initialize_request(request, *args, **kwargs)
        self.upload_limit: UploadLimit | None = None
        if self.action in ("create", "validate"):
            # First in the chain, before anything is parsed (DRF parses lazily, and the session
            # CSRF check would otherwise read the body): it sees each chunk before it is stored.
            self.upload_limit = UploadLimit(request)
            request.upload_handlers.insert(0, self.upload_limit)
        return drf_request

    def perform_content_negotiation(self, request, force: bool = False):
        # A download is not JSON: an Accept header asking for CSV must not end in a 406.
        return super().perform_content_negotiation(request, force=force or self.action == "results")

    def _job(self):
        return services.get_job(self.request.user, self.kwargs["id"])

    def _respond(self, job, code: int = status.HTTP_200_OK) -> Response:
        return Response(job_representation(job, self.request), status=code)

    def _input(self, request: Request, *, validate: bool = False) -> dict[str, Any]:
        """The job input (files included), checked against the serializer for its media type."""
        is_json = (request.content_type or "").split(";")[0].strip().lower() == "application/json"
        if is_json:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
            if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                raise FileTooLarge(
                    "The JSON body is larger than the limit of "
                    f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes; "
                    "upload a file instead.",
                    details={"max_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE},
                )
        data = request.data
        if self.upload_limit is not None:
            self.upload_limit.raise_if_exceeded()
        if validate:
            serializer_class = JobValidateJSONSerializer if is_json else JobValidateFormSerializer
        else:
            serializer_class = JobCreateJSONSerializer if is_json else JobCreateFormSerializer
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def _source(self, data: dict[str, Any]) -> services.Source:
        return input_shapes.source(self.request.user, data)

    # --- collection ------------------------------------------------------------------------------

    @extend_schema(
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
            400: _err("invalid_request: unknown status."),
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def list(self, request: Request) -> Response:
        jobs = services.list_jobs(
            request.user,
            status=_query(request, "status"),
            processor=_query(request, "processor"),
        )
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response([job_representation(job, request) for job in page])

    @extend_schema(
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
            409: _err(
                "idempotency_conflict: the Idempotency-Key was used with a different request."
            ),
            413: _err(
                "file_too_large: the upload is over the size limit; or too_many_rows: the input "
                "has more rows than a job may hold (details.max). Not retryable: split the input."
            ),
            **COMMON_ERRORS,
            429: _err(
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
    )
    def create(self, request: Request) -> Response:
        data = self._input(request)
        key = input_shapes.idempotency_key(
            data, (request.headers.get("Idempotency-Key") or "").strip() or None
        )
        if key is not None and len(key) > 200:
            raise APIError(
                "Idempotency-Key must be at most 200 characters.",
                details={"Idempotency-Key": ["too long"]},
            )
        source = self._source(data)
        kwargs = dict(
            processor=data["processor"],
            params=data.get("params") or {},
            source=source,
            name=data.get("name") or "",
            id_column=data.get("id_column") or None,
            column_map=data.get("column_map") or {},
            webhook_url=data.get("webhook_url") or None,
            concurrency=data.get("concurrency"),
            rate_limit=data.get("rate_limit"),
            max_attempts=data.get("max_attempts"),
            idempotency_key=key,
            actor=services.actor_for(request),
        )
        try:
            job, created = services.create_job(request.user, **kwargs)
        except IntegrityError:
            if key is None:
                raise
            # Two requests with the same key raced; the first one's job exists now.
            job, created = services.create_job(request.user, **kwargs)
        input_shapes.after_create(data, source)
        response = self._respond(job, status.HTTP_201_CREATED if created else status.HTTP_200_OK)
        response["Location"] = job_links(job.public_id, request)["self"]
        return response

    @extend_schema(
        operation_id="jobs_validate",
        summary="Check input without creating a job",
        description=(
            "Reads and checks the input exactly as job creation would, and creates nothing. "
            "Invalid "
            "input is a 200 with `valid: false` and the problems in `errors`. With `sample: N` "
            "(1 to 10) the processor also runs on the first N rows."
        ),
        request=VALIDATE_REQUEST,
        responses={200: ValidationReportSerializer, **INPUT_ERRORS, **COMMON_ERRORS},
        tags=["jobs"],
    )
    def validate(self, request: Request) -> Response:
        data = self._input(request, validate=True)
        report, proc = services.validate_input(
            request.user,
            processor=data["processor"],
            params=data.get("params") or {},
            source=self._source(data),
            id_column=data.get("id_column") or None,
            column_map=data.get("column_map") or {},
            concurrency=data.get("concurrency"),
            rate_limit=data.get("rate_limit"),
            max_attempts=data.get("max_attempts"),
            webhook_url=data.get("webhook_url") or None,
        )
        body: dict[str, Any] = {
            "valid": report.valid,
            "row_count": report.row_count,
            "columns": report.columns,
            "errors": report.errors,
            "preview": report.preview,
            "format": report.info.format,
            "encoding": report.info.encoding,
            "delimiter": report.info.delimiter,
        }
        wanted = data.get("sample") or 0
        if wanted:
            body["sample"] = (
                run_sample(
                    proc.name,
                    proc.params,
                    report.preview[:wanted],
                    column_map=data.get("column_map") or None,
                    owner_id=request.user.pk,
                    limit=wanted,
                )
                if report.valid
                else []
            )
        return Response(body)

    # --- one job ----------------------------------------------------------------------------------

    @extend_schema(
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
            400: _err("invalid_request: unknown include, or results of over 1,000 rows."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def retrieve(self, request: Request, id: str) -> Response:
        wanted = embed.included(_query(request, "include"))
        job = self._job() if wanted else services.job_status(request.user, id)
        body = job_representation(job, request)
        if "results" in wanted:
            body["results"] = embed.embedded_results(job)
        return Response(body)

    @extend_schema(
        operation_id="jobs_partial_update",
        summary="Rename a job",
        description="Only `name` can be changed; any other field is a 400.",
        parameters=[JOB_ID],
        request=JobRenameSerializer,
        responses={
            200: JobSerializer,
            400: _err("invalid_request: bad name, or a field other than name."),
            **NOT_FOUND,
            415: _err("unsupported_media_type: send application/json."),
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def partial_update(self, request: Request, id: str) -> Response:
        job = self._job()
        data = request.data
        if not isinstance(data, dict):
            raise APIError("Send a JSON object with name.")
        others = sorted(set(data) - {"name"})
        if others:
            raise APIError(
                f"Only name can be changed; '{others[0]}' cannot.",
                details={name: ["This field cannot be changed."] for name in others},
            )
        given = JobRenameSerializer(data=data)
        given.is_valid(raise_exception=True)
        return self._respond(
            services.rename(job, given.validated_data["name"], actor=services.actor_for(request))
        )

    @extend_schema(
        operation_id="jobs_destroy",
        summary="Delete a job",
        description="Cancels the job if it is running, then deletes it with its rows and files.",
        parameters=[JOB_ID],
        responses={204: OpenApiResponse(description="Deleted."), **NOT_FOUND, **COMMON_ERRORS},
        tags=["jobs"],
    )
    def destroy(self, request: Request, id: str) -> Response:
        services.delete(self._job(), actor=services.actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _control(self, action) -> Response:
        return self._respond(action(self._job(), actor=services.actor_for(self.request)))

    @extend_schema(
        operation_id="jobs_pause",
        summary="Pause a job",
        description="No new rows start; rows already running finish and keep their results.",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: JobSerializer,
            409: _err("invalid_state: the job cannot be paused now."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def pause(self, request: Request, id: str) -> Response:
        return self._control(services.pause)

    @extend_schema(
        operation_id="jobs_resume",
        summary="Resume a paused job",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: JobSerializer,
            409: _err("invalid_state: the job is not paused."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def resume(self, request: Request, id: str) -> Response:
        return self._control(services.resume)

    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel a job",
        description="Rows not started are cancelled; rows already running finish and keep "
        "their results.",
        parameters=[JOB_ID],
        request=None,
        responses={
            200: JobSerializer,
            409: _err("invalid_state: the job has already finished."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def cancel(self, request: Request, id: str) -> Response:
        return self._control(services.cancel)

    @extend_schema(
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
            400: _err("invalid_request: a malformed or unknown row id."),
            409: _err("invalid_state: the job is not finished or paused, or has no failed rows."),
            415: _err("unsupported_media_type: send application/json."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def retry(self, request: Request, id: str) -> Response:
        job = self._job()
        given = RetrySerializer(
            data=request.data if isinstance(request.data, dict) else {"rows": request.data}
        )
        given.is_valid(raise_exception=True)
        job = services.retry(
            job, actor=services.actor_for(request), row_ids=given.validated_data.get("rows")
        )
        return self._respond(job)

    # --- a job's data -----------------------------------------------------------------------------

    @extend_schema(
        operation_id="jobs_results",
        summary="Download results",
        description=(
            "Streams every row in input order, at any time (partial while the job runs). CSV: the "
            "input columns, then the processor's output columns, then `_status` and `_error`; "
            "cells "
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
            (400, "application/json"): _err("invalid_request: unknown format or status."),
            (404, "application/json"): NOT_FOUND[404],
            (401, "application/json"): COMMON_ERRORS[401],
            (429, "application/json"): COMMON_ERRORS[429],
        },
        tags=["jobs"],
    )
    def results(self, request: Request, id: str) -> StreamingHttpResponse:
        job = self._job()
        fmt = _query(request, "format") or "csv"
        wanted = _query(request, "status") or "all"
        if fmt not in results.FORMATS:
            raise APIError(f"Unknown format '{fmt}'.", details={"format": list(results.FORMATS)})
        if wanted not in results.STATUS_FILTERS:
            raise APIError(
                f"Unknown status '{wanted}'.", details={"status": list(results.STATUS_FILTERS)}
            )
        return results_response(job, fmt, wanted)

    @extend_schema(
        operation_id="jobs_rows",
        summary="List a job's rows",
        description="Row objects as in the JSONL download, in input order.",
        parameters=[
            JOB_ID,
            OpenApiParameter("status", OpenApiTypes.STR, enum=[*ROW_STATUS_FILTERS], default="all"),
        ],
        responses={
            200: RowObjectSerializer(many=True),
            400: _err("invalid_request: unknown status."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def rows(self, request: Request, id: str) -> Response:
        job = self._job()
        wanted = _query(request, "status") or "all"
        if wanted not in ROW_STATUS_FILTERS:
            raise APIError(
                f"Unknown status '{wanted}'.", details={"status": list(ROW_STATUS_FILTERS)}
            )
        qs = Row.objects.filter(job=job)
        by_index = False
        if wanted == "all":
            count = job.total
            # Rows are written once with unique indexes from 0 and `total` is their count, so
            # when the last index is present the indexes are exactly 0..total-1: position = index.
            by_index = count > 0 and qs.filter(index=count - 1).exists()
        else:
            qs = qs.filter(status=wanted)
            count = getattr(job, wanted)
        # The counters on the job give the total in O(1); only the page's rows are read.
        paginator = _KnownCountPagination(count, by_index=by_index)
        page = paginator.paginate_queryset(
            qs.order_by("index").values_list("index", "ref", "status", "data", "output", "error"),
            request,
            self,
        )
        columns = list(job.columns or [])
        return paginator.get_paginated_response([results.row_object(columns, *row) for row in page])

    @extend_schema(
        operation_id="jobs_events",
        summary="A job's timeline",
        description="Stage changes, pause/resume/cancel with who asked, retries and webhook "
        "deliveries, oldest first.",
        parameters=[JOB_ID],
        responses={200: JobEventSerializer(many=True), **NOT_FOUND, **COMMON_ERRORS},
        tags=["jobs"],
    )
    def events(self, request: Request, id: str) -> Response:
        job = self._job()
        page = self.paginate_queryset(JobEvent.objects.filter(job=job).order_by("at", "id"))
        return self.get_paginated_response(JobEventSerializer(page, many=True).data)


# --- unknown URLs under /api/v1/ -----------------------------------------------------------------


def api_not_found(request, rest: str = "") -> JsonResponse:
    """The contract's 404 body for a URL no endpoint answers, with a hint for a trailing slash."""
    message, details = "No such endpoint.", None
    path = request.path
    if path.endswith("/") and len(path) > 1:
        try:
            match = resolve(path.rstrip("/"))
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            message = f"No such endpoint; API paths have no trailing slash: {path.rstrip('/')}"
            details = {"path": path.rstrip("/")}
    return JsonResponse(error_body("not_found", message, details), status=404)
