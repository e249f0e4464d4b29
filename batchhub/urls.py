from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apikeys.urls import api_urlpatterns as key_api_urls
from batchhub.login_throttle import ThrottledAdminAuthenticationForm, ThrottledLoginView
from jobs.account_views import signup
from jobs.api.links import link_api_urlpatterns
from jobs.api.uploads import upload_api_urlpatterns
from jobs.api.urls import urlpatterns as job_api_urls
from jobs.credential_views import credential_urlpatterns
from jobs.settings_views import settings_urlpatterns
from jobs.webhook_views import webhook_api_urlpatterns

admin.site.login_form = ThrottledAdminAuthenticationForm

api_v1 = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    *key_api_urls,
    *webhook_api_urlpatterns,
    *link_api_urlpatterns,
    *upload_api_urlpatterns,
    *job_api_urls,
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", signup, name="signup"),
    path("api/v1/", include(api_v1)),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Redoc fetches its logo from its vendor's site whatever its options: the offline docs are
    # Swagger UI's; the old address still leads there.
    path("api/redoc/", RedirectView.as_view(url="/api/docs/", permanent=True), name="api-redoc"),
    path("keys/", include("apikeys.urls")),
    path("settings/", include(settings_urlpatterns)),
    path("settings/credentials/", include(credential_urlpatterns)),
    path("", include("jobs.urls")),
]

handler404 = "jobs.views.not_found"
# A database error outside any view (a middleware's session or user lookup) is a 503 too.
handler500 = "batchhub.dbbusy.handler500"
