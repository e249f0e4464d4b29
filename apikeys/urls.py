"""URLs of the API keys page (mounted at /keys/) and of its API (`api_urlpatterns`, /api/v1/)."""

from __future__ import annotations

from django.urls import path

from . import api, views

app_name = "apikeys"

urlpatterns = [
    path("", views.key_list, name="list"),
    path("<str:public_id>/revoke", views.revoke, name="revoke"),
]

# No namespace: included by the project's /api/v1/ urlconf beside the other apps' API routes.
api_urlpatterns = [
    path(
        "keys",
        api.APIKeyViewSet.as_view({"get": "list", "post": "create"}),
        name="api-keys-list",
    ),
    path(
        "keys/<str:id>",
        api.APIKeyViewSet.as_view({"delete": "destroy"}),
        name="api-keys-detail",
    ),
]
