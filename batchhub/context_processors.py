from __future__ import annotations

from django.conf import settings


def site(request):
    return {"allow_signup": settings.BATCHHUB_ALLOW_SIGNUP}
