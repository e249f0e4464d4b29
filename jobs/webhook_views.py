""" "Send again" for a job's webhook: a button on the job page and an API endpoint.

The page's route is in jobs/urls.py (namespace "jobs"); mount `webhook_api_urlpatterns` under
/api/v1/. Both go through services, as every job action does.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.http import require_POST
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from batchhub.api import InvalidState

from . import services
from .webhook_deliveries import CannotRedeliver


@login_required
@require_POST
def redeliver_view(request, public_id: str):
    # Another user's job, or an expired one, is a 404 like a missing one.
    job = services.get_job(request.user, public_id)
    try:
        services.redeliver_webhook(job, actor=services.actor_for(request))
    except CannotRedeliver as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, "The webhook will be sent again in a moment; attempts appear in the timeline."
        )
    return redirect("jobs:detail", job.public_id)


class RedeliverWebhookAPIView(APIView):
    throttle_group = "control"

    @extend_schema(
        operation_id="jobs_webhook_redeliver",
        summary="Send the job's webhook again",
        description=(
            "Queues a new delivery of the job's terminal event (a new `webhook-id`). "
            "409 `invalid_state` if the job has not finished or has no webhook URL."
        ),
        request=None,
        responses={
            202: inline_serializer(
                "WebhookRedelivery",
                {"webhook_id": serializers.CharField(), "type": serializers.CharField()},
            )
        },
        tags=["jobs"],
    )
    def post(self, request, id: str) -> Response:
        job = services.get_job(request.user, id)
        try:
            webhook_id = services.redeliver_webhook(job, actor=services.actor_for(request))
        except CannotRedeliver as exc:
            raise InvalidState(str(exc)) from None
        return Response(
            {"webhook_id": webhook_id, "type": f"job.{job.status}"}, status=status.HTTP_202_ACCEPTED
        )


webhook_api_urlpatterns = [
    path(
        # `id`, as every other API route names a job (the schema shows the name).
        "jobs/<str:id>/webhook/redeliver",
        RedeliverWebhookAPIView.as_view(),
        name="api-webhook-redeliver",
    ),
]
