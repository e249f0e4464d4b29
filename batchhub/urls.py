from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularSwaggerView

from apikeys.urls import api_urlpatterns as key_api_urls
from batchhub.login_throttle import ThrottledAdminAuthenticationForm
from batchhub.schema_view import SchemaView
from jobs.api.links import link_api_urlpatterns
from jobs.api.uploads import upload_api_urlpatterns
from jobs.api.urls import urlpatterns as job_api_urls
from jobs.webhook_views import webhook_api_urlpatterns

admin.site.login_form = ThrottledAdminAuthenticationForm

api_v1 = [
    path("schema/", SchemaView.as_view(), name="schema"),
    *key_api_urls,
    *webhook_api_urlpatterns,
    *link_api_urlpatterns,
    *upload_api_urlpatterns,
    *job_api_urls,
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Redoc fetches its logo from its vendor's site whatever its options: the offline docs are
    # Swagger UI's; the old address still leads there.
    path("api/redoc/", RedirectView.as_view(url="/api/docs/", permanent=True), name="api-redoc"),
    path("keys/", include("apikeys.urls")),
    # Log in and out, sign-up, settings/ and settings/credentials/.
    path("", include("accounts.urls")),
    path("", include("jobs.urls")),
]

handler404 = "jobs.views.not_found"
# A database error outside any view (a middleware's session or user lookup) is a 503 too.
handler500 = "batchhub.dbbusy.handler500"
