"""The API of two-step uploads (jobs/uploads.py): create one, PUT its bytes, read its state.
Mounted under /api/v1/ before the jobs routes (their last route is a 404)."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batchhub.api import LengthRequired
from batchhub.parsers import BoundedJSONParser
from batchhub.request_fields import refuse_unknown_fields

from .. import links, uploads
from ..models import Upload
from ..representation import API_PREFIX, base_url, utc
from .schema import COMMON_ERRORS, error_response
from .serializers import UTCDateTimeField


class UploadCreateSerializer(serializers.Serializer):
    filename = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="The file's name; .jsonl, .ndjson and .gz tell the format as in a multipart "
        "upload. Default input.csv.",
    )


class UploadSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="upl_<ULID>")
    filename = serializers.CharField()
    status = serializers.ChoiceField(choices=["waiting", "received", "used"])
    size = serializers.IntegerField(help_text="Bytes received by the PUT.")
    upload_url = serializers.URLField(
        required=False, help_text="PUT the raw file here (no API key needed); only on creation."
    )
    upload_url_expires_at = UTCDateTimeField(
        required=False, help_text="The upload_url works until then; only on creation."
    )
    expires_at = UTCDateTimeField(help_text="An unused upload is deleted then.")
    created_at = UTCDateTimeField()


def _status(upload: Upload) -> str:
    if upload.received_at is None:
        return "waiting"
    return "received" if upload.file else "used"


def upload_object(upload: Upload, *, url_expiry: int = 0, token: str = "", request=None):
    body = {
        "id": upload.public_id,
        "filename": upload.filename,
        "status": _status(upload),
        "size": upload.size,
        "expires_at": utc(upload.expires_at),
        "created_at": utc(upload.created_at),
    }
    if token:
        body["upload_url"] = (
            f"{base_url(request)}{API_PREFIX}/uploads/{upload.public_id}/content?token={token}"
        )
        body["upload_url_expires_at"] = utc(links.expires_at(url_expiry))
    return body


UPLOAD_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The upload's id (upl_…)."
)


class UploadListView(APIView):
    parser_classes = [BoundedJSONParser]
    throttle_group = "create"

    @extend_schema(
        operation_id="uploads_create",
        summary="Start a two-step upload",
        description=(
            "For files too large for one multipart request to be comfortable: returns an "
            "`upload_url`; PUT the raw file to it (no API key), then create the job with "
            '`POST /jobs {"upload": id, "processor": …}`. The file is validated then, exactly '
            "as a multipart upload is, under the same size limit."
        ),
        request=UploadCreateSerializer,
        responses={201: UploadSerializer, 400: error_response("invalid_request"), **COMMON_ERRORS},
        tags=["uploads"],
    )
    def post(self, request: Request) -> Response:
        refuse_unknown_fields(request.data, UploadCreateSerializer().fields)
        given = UploadCreateSerializer(data=request.data if isinstance(request.data, dict) else {})
        given.is_valid(raise_exception=True)
        upload, token, expiry = uploads.create(
            request.user, given.validated_data.get("filename") or ""
        )
        return Response(
            upload_object(upload, url_expiry=expiry, token=token, request=request),
            status=status.HTTP_201_CREATED,
        )


class UploadDetailView(APIView):
    throttle_group = "read"

    @extend_schema(
        operation_id="uploads_retrieve",
        summary="Get an upload",
        parameters=[UPLOAD_ID],
        responses={
            200: UploadSerializer,
            404: error_response("not_found: no such upload (or not yours)."),
            **COMMON_ERRORS,
        },
        tags=["uploads"],
    )
    def get(self, request: Request, id: str) -> Response:
        return Response(upload_object(uploads.get(request.user, id), request=request))


class UploadContentView(APIView):
    # The signed URL is the credential; the body is raw bytes that no parser may touch.
    authentication_classes = ()
    permission_classes = (AllowAny,)
    parser_classes = ()
    throttle_group = "create"

    @extend_schema(
        operation_id="uploads_put_content",
        summary="Send an upload's bytes",
        description=(
            "The raw file as the body (any Content-Type), streamed to storage. A second PUT "
            "replaces the first. 413 `file_too_large` over the upload limit, 410 `link_expired` "
            "after the URL's time, 404 for a token that is not genuine."
        ),
        auth=[],
        parameters=[
            UPLOAD_ID,
            OpenApiParameter("token", OpenApiTypes.STR, required=True, description="Signed token."),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={
            200: UploadSerializer,
            400: error_response("invalid_request: an empty body."),
            404: error_response("not_found: no such upload."),
            409: error_response("invalid_state: the upload was already used by a job."),
            410: error_response("link_expired: the upload URL has expired."),
            411: error_response("length_required: no Content-Length header."),
            413: error_response("file_too_large: the body is over the upload limit."),
            429: COMMON_ERRORS[429],
        },
        tags=["uploads"],
    )
    def put(self, request: Request, id: str) -> Response:
        raw = request._request  # the Django request: its body is still unread, as a stream
        length = (raw.META.get("CONTENT_LENGTH") or "").strip()
        if not length.isdigit():
            # Django reads a WSGI body only as far as its declared length: without one (chunked
            # transfer), it would read nothing and store an empty file.
            raise LengthRequired()
        upload = uploads.receive(id, request.query_params.get("token", ""), raw, int(length))
        return Response(upload_object(upload, request=request))


upload_api_urlpatterns = [
    path("uploads", UploadListView.as_view(), name="api-uploads-list"),
    path("uploads/<str:id>", UploadDetailView.as_view(), name="api-uploads-detail"),
    path("uploads/<str:id>/content", UploadContentView.as_view(), name="api-uploads-content"),
]
