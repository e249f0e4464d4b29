"""Sign-up, the settings page (the webhook signing secret) and the provider credentials page.

The credentials page never shows a secret after it is saved, only its name and a masked hint;
the LLM processor's ``credential`` param names one of these.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from jobs import credentials as service
from jobs.models import UserSettings

from .forms import CredentialForm


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Only when the site allows it (BATCHHUB_ALLOW_SIGNUP); otherwise the page does not exist."""
    if not settings.BATCHHUB_ALLOW_SIGNUP:
        raise Http404("Sign-up is turned off.")
    if request.user.is_authenticated:
        return redirect("jobs:list")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("jobs:list")
    return render(
        request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200
    )


@login_required
def settings_page(request: HttpRequest) -> HttpResponse:
    prefs = UserSettings.get_or_create_for(request.user)
    secret = prefs.webhook_secret
    return render(
        request,
        "accounts/settings.html",
        {
            "nav": "settings",
            "prefs": prefs,
            "secret": secret,
            "secret_masked": secret[:10] + "•" * 16 + secret[-4:],
        },
    )


@login_required
@require_POST
def rotate_secret(request: HttpRequest) -> HttpResponse:
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


@login_required
@require_http_methods(["GET", "POST"])
def credentials(request: HttpRequest) -> HttpResponse:
    form = CredentialForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["name"]
        _credential, created = service.save_credential(
            request.user, name, form.cleaned_data["secret"]
        )
        messages.success(
            request,
            f"Saved credential “{name}”." if created else f"Replaced the secret of “{name}”.",
        )
        return redirect("credentials")
    context = {
        "nav": "settings",
        "form": form,
        "credentials": [
            {"info": info, "delete_url": reverse("credential_delete", args=[info.name])}
            for info in service.list_credentials(request.user)
        ],
    }
    return render(request, "accounts/credentials.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def credential_delete(request: HttpRequest, name: str) -> HttpResponse:
    if not service.delete_credential(request.user, name):
        raise Http404("No such credential.")
    messages.success(request, f"Deleted credential “{name}”.")
    return redirect("credentials")
