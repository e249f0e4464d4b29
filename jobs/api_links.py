"""The API of signed results links: the key-less download a `results_url` points to, and revoking
every link of a job. Mounted under /api/v1/ before the jobs routes (their last route is a 404)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import links, services
from .api import (
    COMMON_ERRORS,
    JOB_ID,
    NOT_FOUND,
    JobSerializer,
    _err,
    job_representation,
    results_response,
)


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
            "The `results_url` of a job object: the results as CSV, streamed like "
            "GET /jobs/{id}/results, with no API key. 404 `not_found` if the token is not "
            "genuine, names another job, or the job is gone; 410 `link_expired` past its time, "
            "410 `link_revoked` after POST /jobs/{id}/revoke-links."
        ),
        auth=[],
        parameters=[
            JOB_ID,
            OpenApiParameter("token", OpenApiTypes.STR, required=True, description="Signed token."),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The results."),
            (404, "application/json"): _err("not_found: no such link."),
            (410, "application/json"): _err("link_expired or link_revoked."),
            (429, "application/json"): COMMON_ERRORS[429],
        },
        tags=["jobs"],
    )
    def get(self, request: Request, id: str) -> StreamingHttpResponse:
        job, fmt, wanted = links.open_results(id, request.query_params.get("token", ""))
        return results_response(job, fmt, wanted)


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
        job = links.revoke(job, actor=services.actor_for(request))
        return Response(job_representation(job, request))


link_api_urlpatterns = [
    path("jobs/<str:id>/download", SignedDownloadView.as_view(), name="api-jobs-download"),
    path("jobs/<str:id>/revoke-links", RevokeLinksView.as_view(), name="api-jobs-revoke-links"),
]
