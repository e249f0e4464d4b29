from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apikeys.urls import api_urlpatterns as key_api_urls
from jobs.account_views import signup
from jobs.api_urls import urlpatterns as job_api_urls
from jobs.credential_views import credential_urlpatterns
from jobs.settings_views import settings_urlpatterns
from jobs.webhook_views import webhook_api_urlpatterns, webhook_urlpatterns

api_v1 = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    *key_api_urls,
    *webhook_api_urlpatterns,
    *job_api_urls,
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", signup, name="signup"),
    path("api/v1/", include(api_v1)),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("keys/", include("apikeys.urls")),
    path("settings/", include(settings_urlpatterns)),
    path("settings/credentials/", include(credential_urlpatterns)),
    path("", include(webhook_urlpatterns)),
    path("", include("jobs.urls")),
]

handler404 = "jobs.views.not_found"
# A database error outside any view (a middleware's session or user lookup) is a 503 too.
handler500 = "batchhub.dbbusy.handler500"
