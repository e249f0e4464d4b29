"""Serializers of the jobs and processors API: what a request may carry and what a response holds.

The output serializers describe the job and row objects for the OpenAPI schema; the bodies
themselves come from `jobs.representation` and `jobs.results`, which the engine shares.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from batchhub import jsonsafe
from batchhub.jsonstream import JSONLines

from .. import input_shapes
from ..models import MAX_RATE_LIMIT, JobEvent, JobStatus, RowStatus
from ..representation import TIMESTAMP_FORMAT, job_links, results_link

MAX_SAMPLE = 10
MAX_RETRY_IDS = 10_000


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


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


class RowsField(serializers.ListField):
    """A list of row objects, checked where it lies: DRF's ListField of DictField copies every
    row, which doubled the memory a large rows body takes (each row is read again later)."""

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        if isinstance(data, JSONLines):
            # Read from the body a row at a time: the parser noted the rows that are no object.
            message = self.child.error_messages["not_a_dict"]
            if data.not_objects:
                raise serializers.ValidationError(
                    {i: [message.format(input_type=kind)] for i, kind in data.not_objects}
                )
            return data
        errors = {
            index: [self.child.error_messages["not_a_dict"].format(input_type=type(item).__name__)]
            for index, item in enumerate(data)
            if type(item) is not dict
        }
        if errors:
            raise serializers.ValidationError(errors)
        return data if type(data) is list else list(data)


class DocumentsField(serializers.ListField):
    """Documents read from the body one at a time (a JSONLines) pass as they are: each becomes a
    row, and is checked, in jobs/input_shapes.py; a list of them is checked item by item."""

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        if isinstance(data, JSONLines):
            return data
        return super().run_child_validation(data)


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
    rows_per_second = serializers.FloatField(
        help_text="Recent processing rate (last ~30 s of work; pauses left out), as the job page."
    )
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
        max_value=MAX_RATE_LIMIT,
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
    rows = RowsField(
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
    documents = DocumentsField(
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
    # An empty file is input that is not valid: the ingest's check says so as for any other
    # file (400 invalid_csv, or a validation report), not DRF's field error.
    file = serializers.FileField(
        allow_empty_file=True, help_text="CSV, gzip-compressed CSV, or JSONL."
    )
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
