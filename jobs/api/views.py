"""The REST API for processors and jobs (`/api/v1/`), to the contract in API.md.

Views are thin: every action is a `jobs.services` call, so the API does what the site does. The
services raise `batchhub.api.APIError` subclasses, which the project's exception handler renders
as the contract's error body; these views only parse requests and shape responses. What each
operation promises (the OpenAPI text) is in `schema`, the request and response shapes in
`serializers`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.urls import Resolver404, resolve
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from batchhub import jsonstream
from batchhub.api import (
    APIError,
    FileTooLarge,
    LimitOffsetPagination,
    error_body,
    raise_if_chunked,
)
from batchhub.parsers import PlainMultiPartParser, StreamedRowsJSONParser
from batchhub.request_fields import refuse_repeated_parts, refuse_unknown_fields

from .. import creation, input_shapes, poll, results, services
from ..downloads import results_response
from ..models import Job, JobEvent
from ..processors import all_processors, get_processor_class
from ..representation import job_links, job_representation
from ..sample import run_sample
from ..upload import UploadLimit
from . import embed
from .schema import job_schema, processor_schema
from .serializers import (
    JobCreateFormSerializer,
    JobCreateJSONSerializer,
    JobEventSerializer,
    JobRenameSerializer,
    JobSerializer,
    JobValidateFormSerializer,
    JobValidateJSONSerializer,
    RetrySerializer,
)

# Fields one body takes and the other does not: named as such, not as unknown.
_FORM_ONLY = {"file": "a file goes in a multipart body; in JSON send rows, upload or csv_base64"}
_JSON_ONLY = {
    name: "taken in a JSON body only"
    for name in ("rows", "upload", "csv_base64", "documents", "column_mapping", "job_id")
}


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and "\x00" in value:
        raise APIError(
            f"{name} must not contain NUL characters.", details={name: ["NUL character"]}
        )
    return value


class _JobRows:
    """A job's rows as the paginator sees them: the count from the job's counters (O(1), no
    COUNT(*)), and only the page's rows read, through `results`."""

    def __init__(self, job: Job, status: str):
        self.job = job
        self.status = status

    def count(self) -> int:
        return self.job.total if self.status == "all" else getattr(self.job, self.status)

    def __getitem__(self, window: slice) -> list[tuple]:
        return results.row_page(self.job, self.status, window.start, window.stop - window.start)


@processor_schema
class ProcessorViewSet(viewsets.ViewSet):
    pagination_class = None
    throttle_group = "read"

    def list(self, request: Request) -> Response:
        return Response([cls.describe() for cls in all_processors()])

    def retrieve(self, request: Request, name: str) -> Response:
        cls = get_processor_class(name)
        if cls is None:
            raise Http404("No such processor.")
        return Response(cls.describe())


@job_schema
class JobViewSet(viewsets.GenericViewSet):
    pagination_class = LimitOffsetPagination
    parser_classes = [StreamedRowsJSONParser, PlainMultiPartParser]
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

    @property
    def streamed_json_fields(self) -> tuple[str, ...]:
        # A job's rows are read a row at a time into a file, never as a list of objects.
        return ("rows", "documents") if self.action in ("create", "validate") else ()

    # Items that are not objects are refused in these (documents may be strings).
    object_json_fields = ("rows",)

    def dispatch(self, request, *args: Any, **kwargs: Any):
        # The rows read from a body into temporary files are closed when the request ends.
        with jsonstream.closing_files():
            return super().dispatch(request, *args, **kwargs)

    def initialize_request(self, request, *args: Any, **kwargs: Any) -> Request:
        drf_request = super().initialize_request(request, *args, **kwargs)
        if self.action in ("create", "validate"):
            # First in the chain, before anything is parsed (DRF parses lazily, and the session
            # CSRF check would otherwise read the body): it sees each chunk before it is stored.
            self.upload_limit = UploadLimit(request)
            request.upload_handlers.insert(0, self.upload_limit)
        return drf_request

    def initial(self, request, *args: Any, **kwargs: Any) -> None:
        if self.action == "retrieve":
            # A status poll: the key, the rate limit and the job's status in one cache trip.
            poll.prefetch(request, self, kwargs["id"])
        super().initial(request, *args, **kwargs)

    def perform_content_negotiation(self, request, force: bool = False):
        # A download is not JSON: an Accept header asking for CSV must not end in a 406.
        return super().perform_content_negotiation(request, force=force or self.action == "results")

    def _job(self):
        return services.get_job(self.request.user, self.kwargs["id"])

    def _respond(self, job, code: int = status.HTTP_200_OK) -> Response:
        return Response(job_representation(job, self.request), status=code)

    def _input(self, request: Request, *, validate: bool = False) -> dict[str, Any]:
        """The job input (files included), checked against the serializer for its media type."""
        raise_if_chunked(request.META)
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
        self.upload_limit.raise_if_exceeded()
        refuse_repeated_parts(data)
        if validate:
            serializer_class = JobValidateJSONSerializer if is_json else JobValidateFormSerializer
        else:
            serializer_class = JobCreateJSONSerializer if is_json else JobCreateFormSerializer
        serializer = serializer_class(data=data)
        refuse_unknown_fields(
            data, serializer.fields, elsewhere=_FORM_ONLY if is_json else _JSON_ONLY
        )
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    @staticmethod
    def _job_fields(data: dict[str, Any]) -> dict[str, Any]:
        """What creating and validating a job both take from the checked input."""
        return dict(
            processor=data["processor"],
            params=data["params"],
            id_column=data.get("id_column") or None,
            column_map=data["column_map"],
            webhook_url=data.get("webhook_url") or None,
            concurrency=data.get("concurrency"),
            rate_limit=data.get("rate_limit"),
            max_attempts=data.get("max_attempts"),
        )

    # --- collection ------------------------------------------------------------------------------

    def list(self, request: Request) -> Response:
        jobs = services.list_jobs(
            request.user,
            status=_query(request, "status"),
            processor=_query(request, "processor"),
        )
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response([job_representation(job, request) for job in page])

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
        source = input_shapes.source(request.user, data)
        kwargs = dict(
            **self._job_fields(data),
            source=source,
            name=data.get("name") or "",
            idempotency_key=key,
            actor=services.actor_for(request),
        )
        # Two requests racing with one key are settled inside create_job.
        job, created = creation.create_job(request.user, **kwargs)
        input_shapes.after_create(data, source)
        response = self._respond(job, status.HTTP_201_CREATED if created else status.HTTP_200_OK)
        response["Location"] = job_links(job.public_id, request)["self"]
        return response

    # @action marks the routes urls.py maps beyond DRF's standard actions, so that the class-level
    # schema (extend_schema_view in `schema`) reaches them as well.
    @action(detail=False, methods=["post"])
    def validate(self, request: Request) -> Response:
        data = self._input(request, validate=True)
        report, proc = creation.validate_input(
            request.user, source=input_shapes.source(request.user, data), **self._job_fields(data)
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
        wanted = data["sample"]
        if wanted:
            body["sample"] = (
                run_sample(
                    proc.name,
                    proc.params,
                    report.preview[:wanted],
                    column_map=data["column_map"] or None,
                    owner_id=request.user.pk,
                    limit=wanted,
                )
                if report.valid
                else []
            )
        return Response(body)

    # --- one job ----------------------------------------------------------------------------------

    def retrieve(self, request: Request, id: str) -> Response:
        wanted = embed.included(_query(request, "include"))
        job = (
            self._job() if wanted else services.job_status(request.user, id, poll.live(request, id))
        )
        body = job_representation(job, request)
        if "results" in wanted:
            body["results"] = embed.embedded_results(job)
        return Response(body)

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

    def destroy(self, request: Request, id: str) -> Response:
        services.delete(self._job(), actor=services.actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _control(self, change) -> Response:
        return self._respond(change(self._job(), actor=services.actor_for(self.request)))

    @action(detail=True, methods=["post"])
    def pause(self, request: Request, id: str) -> Response:
        return self._control(services.pause)

    @action(detail=True, methods=["post"])
    def resume(self, request: Request, id: str) -> Response:
        return self._control(services.resume)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, id: str) -> Response:
        return self._control(services.cancel)

    @action(detail=True, methods=["post"])
    def retry(self, request: Request, id: str) -> Response:
        job = self._job()
        # A misspelt "rows" would otherwise retry every failed row.
        refuse_unknown_fields(request.data, RetrySerializer().fields)
        given = RetrySerializer(
            data=request.data if isinstance(request.data, dict) else {"rows": request.data}
        )
        given.is_valid(raise_exception=True)
        job = services.retry(
            job, actor=services.actor_for(request), row_ids=given.validated_data.get("rows")
        )
        return self._respond(job)

    # --- a job's data -----------------------------------------------------------------------------

    @action(detail=True, methods=["get"])
    def results(self, request: Request, id: str) -> StreamingHttpResponse:
        job = self._job()
        fmt = _query(request, "format") or "csv"
        wanted = _query(request, "status") or "all"
        if fmt not in results.FORMATS:
            raise APIError(
                f"Unknown format '{fmt}': use one of {', '.join(results.FORMATS)}.",
                details={"format": list(results.FORMATS)},
            )
        if wanted not in results.STATUS_FILTERS:
            raise APIError(
                f"Unknown status '{wanted}': use one of {', '.join(results.STATUS_FILTERS)}.",
                details={"status": list(results.STATUS_FILTERS)},
            )
        return results_response(job, fmt, wanted)

    @action(detail=True, methods=["get"])
    def rows(self, request: Request, id: str) -> Response:
        job = self._job()
        wanted = _query(request, "status") or "all"
        if wanted not in results.ROW_STATUS_FILTERS:
            raise APIError(
                f"Unknown status '{wanted}'.", details={"status": list(results.ROW_STATUS_FILTERS)}
            )
        page = self.paginate_queryset(_JobRows(job, wanted))
        columns = list(job.columns or [])
        return self.get_paginated_response([results.row_object(columns, *row) for row in page])

    @action(detail=True, methods=["get"])
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
