"""tests/webhooks/urls.py plus a page named `credentials`, as the credentials module mounts it."""

from __future__ import annotations

from django.urls import path

from .urls import _placeholder
from .urls import urlpatterns as base

urlpatterns = [path("settings/credentials/", _placeholder, name="credentials"), *base]
