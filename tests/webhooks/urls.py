"""Test-only urlconf: the account pages and webhook routes, plus the names base.html links to.

Mounted as the project does (settings/, jobs/, api/v1/), with placeholders for pages owned by other
modules, so these tests do not depend on them.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from jobs import webhook_views
from jobs.webhook_views import webhook_api_urlpatterns


def _placeholder(request, *args, **kwargs):
    return HttpResponse("placeholder")


_jobs = (
    [
        path("", _placeholder, name="list"),
        path("new", _placeholder, name="new"),
        path("jobs/<str:public_id>/", _placeholder, name="detail"),
        path(
            "jobs/<str:public_id>/webhook/redeliver/",
            webhook_views.redeliver_view,
            name="webhook-redeliver",
        ),
    ],
    "jobs",
)
_keys = ([path("", _placeholder, name="list")], "apikeys")

urlpatterns = [
    path("", include(_jobs)),
    path("keys/", include(_keys)),
    path("", include("accounts.urls")),
    path("api/v1/", include(webhook_api_urlpatterns)),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
