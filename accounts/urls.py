"""The account pages' URLs, without a namespace: templates and LOGIN_URL name them plainly."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from batchhub.login_throttle import ThrottledLoginView

from . import views

urlpatterns = [
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/webhook-secret/rotate/", views.rotate_secret, name="settings_rotate_secret"),
    path("settings/credentials/", views.credentials, name="credentials"),
    path(
        "settings/credentials/<slug:name>/delete/",
        views.credential_delete,
        name="credential_delete",
    ),
]
