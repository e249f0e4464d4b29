"""The API of signed results links: the key-less download a `results_url` points to, and revoking
every link of a job. Mounted under /api/v1/ before the jobs routes (their last route is a 404)."""

from __future__ import annotations

from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batchhub.api import APIError
from batchhub.parsers import BoundedJSONParser
from batchhub.request_fields import refuse_unknown_fields

from .. import links, results, services
from ..downloads import results_response
from ..representation import API_PREFIX, base_url, job_representation, utc
from .schema import COMMON_ERRORS, JOB_ID, NOT_FOUND, error_response
from .serializers import JobSerializer


class SignedDownloadView(APIView):
    # The signature is the credential: no key, no session (so no CSRF either).
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_group = "download"

    def perform_content_negotiation(self, request, force: bool = False):
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="jobs_download_signed",
        summary="Download results through a signed link",
        description=(
            "The `results_url` of a job object (or a link from POST /jobs/{id}/results-link): "
            "the results, streamed like GET /jobs/{id}/results, with no API key. 404 `not_found` "
            "if the token is not genuine, names another job, or the job is gone; "
            "410 `link_expired` past its time, 410 `link_revoked` after "
            "POST /jobs/{id}/revoke-links."
        ),
        auth=[],
        parameters=[
            JOB_ID,
            OpenApiParameter("token", OpenApiTypes.STR, required=True, description="Signed token."),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="format csv"),
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="format jsonl"
            ),
            (200, "application/json"): OpenApiResponse(OpenApiTypes.STR, description="format json"),
            (404, "application/json"): error_response("not_found: no such link."),
            (410, "application/json"): error_response("link_expired or link_revoked."),
            (429, "application/json"): COMMON_ERRORS[429],
        },
        tags=["jobs"],
    )
    def get(self, request: Request, id: str) -> StreamingHttpResponse:
        job, fmt, wanted = links.open_results(id, request.query_params.get("token", ""))
        return results_response(job, fmt, wanted)


class ResultsLinkRequestSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=[*results.FORMATS], default="csv")
    status = serializers.ChoiceField(choices=[*results.STATUS_FILTERS], default="all")
    expires_in = serializers.IntegerField(
        required=False,
        min_value=60,
        help_text="Seconds the link works; default and most: BATCHHUB_LINK_SECONDS (4 h).",
    )


class ResultsLinkSerializer(serializers.Serializer):
    url = serializers.URLField()
    expires_at = serializers.DateTimeField()
    format = serializers.CharField()
    status = serializers.CharField()


class ResultsLinkView(APIView):
    parser_classes = [BoundedJSONParser]
    throttle_group = "control"

    @extend_schema(
        operation_id="jobs_results_link",
        summary="A signed results link in another format",
        description=(
            "Like the job object's `results_url` (CSV, every row), for any format and status "
            "filter, and optionally shorter-lived."
        ),
        parameters=[JOB_ID],
        request=ResultsLinkRequestSerializer,
        responses={
            200: ResultsLinkSerializer,
            400: error_response(
                "invalid_request: unknown format or status, or expires_in too long."
            ),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=["jobs"],
    )
    def post(self, request: Request, id: str) -> Response:
        job = services.get_job(request.user, id)
        refuse_unknown_fields(request.data, ResultsLinkRequestSerializer().fields)
        given = ResultsLinkRequestSerializer(
            data=request.data if isinstance(request.data, dict) else {}
        )
        given.is_valid(raise_exception=True)
        data = given.validated_data
        most = settings.BATCHHUB_LINK_SECONDS
        if data.get("expires_in", most) > most:
            raise APIError(
                f"expires_in can be at most {most} seconds.", details={"expires_in": [f"≤ {most}"]}
            )
        token, expiry = links.results_token(
            job, data["format"], data["status"], data.get("expires_in")
        )
        return Response(
            {
                "url": f"{base_url(request)}{API_PREFIX}/jobs/{job.public_id}/download"
                f"?token={token}",
                "expires_at": utc(links.expires_at(expiry)),
                "format": data["format"],
                "status": data["status"],
            }
        )


class RevokeLinksView(APIView):
    throttle_group = "control"

    @extend_schema(
        operation_id="jobs_revoke_links",
        summary="Revoke every results link of a job",
        description=(
            "Every `results_url` handed out so far stops working (410 `link_revoked`). The job "
            "object returned carries a new one."
        ),
        parameters=[JOB_ID],
        request=None,
        responses={200: JobSerializer, **NOT_FOUND, **COMMON_ERRORS},
        tags=["jobs"],
    )
    def post(self, request: Request, id: str) -> Response:
        job = services.get_job(request.user, id)
        job = services.revoke_links(job, actor=services.actor_for(request))
        return Response(job_representation(job, request))


link_api_urlpatterns = [
    path("jobs/<str:id>/download", SignedDownloadView.as_view(), name="api-jobs-download"),
    path("jobs/<str:id>/revoke-links", RevokeLinksView.as_view(), name="api-jobs-revoke-links"),
    path("jobs/<str:id>/results-link", ResultsLinkView.as_view(), name="api-jobs-results-link"),
]
