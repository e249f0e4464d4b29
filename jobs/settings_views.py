"""The user's settings page: the webhook signing secret (shown, rotatable) and links to the rest."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.views.decorators.http import require_POST

from .models import UserSettings


def _url_or_none(name: str) -> str | None:
    # The credentials page lives in another module; the settings page must not break without it.
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


@login_required
def settings_page(request):
    prefs = UserSettings.get_or_create_for(request.user)
    secret = prefs.webhook_secret
    return render(
        request,
        "jobs/settings.html",
        {
            "nav": "settings",
            "prefs": prefs,
            "secret": secret,
            "secret_masked": secret[:10] + "•" * 16 + secret[-4:],
            "credentials_url": _url_or_none("credentials"),
        },
    )


@login_required
@require_POST
def rotate_secret(request):
    # A rotation breaks verification at every receiver not yet updated: the box must be ticked,
    # so a stray click (or a page without JavaScript) cannot rotate by accident.
    if request.POST.get("confirm") != "yes":
        messages.error(
            request, "Tick the box to confirm: receivers must be updated with the new secret."
        )
        return redirect("settings")
    UserSettings.get_or_create_for(request.user).rotate_webhook_secret()
    messages.success(
        request,
        "New signing secret created. For 24 hours deliveries carry signatures from both the old "
        "and the new secret, so you can update your receivers without missing an event.",
    )
    return redirect("settings")


settings_urlpatterns = [
    path("", settings_page, name="settings"),
    path("webhook-secret/rotate/", rotate_secret, name="settings_rotate_secret"),
]
