"""The API keys page: list, create (the key is shown once, in the POST response) and revoke.

The new key is rendered straight into the response to the POST that created it: no redirect, so it
never travels through a URL, the session, a cookie or the message framework, and a reload or a
later visit can only show the prefix.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from . import services
from .forms import CreateKeyForm
from .models import APIKey

PAGE = "apikeys/list.html"


def _page(
    request: HttpRequest,
    form: CreateKeyForm,
    *,
    created: APIKey | None = None,
    plaintext: str | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "nav": "keys",
        "keys": services.list_keys(request.user),
        "form": form,
        "created": created,
        "plaintext": plaintext,
        # The curl example must work when pasted, so it names this site's absolute URL.
        "jobs_api_url": request.build_absolute_uri("/api/v1/jobs"),
    }
    # HTMX swaps only the section (form, new-key panel, table); without JS, the whole page.
    template = f"{PAGE}#keys-section" if request.htmx else PAGE
    response = render(request, template, context, status=status)
    # Neither the browser cache nor a proxy may keep a page that can hold a key.
    add_never_cache_headers(response)
    return response


@login_required
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request, CreateKeyForm())
    form = CreateKeyForm(request.POST)
    if form.is_valid():
        try:
            key, plaintext = services.create_key(
                request.user, form.cleaned_data["name"], form.expires_at()
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                for error in errors:
                    form.add_error(field if field in form.fields else None, error)
        else:
            return _page(request, CreateKeyForm(), created=key, plaintext=plaintext, status=201)
    # htmx 2 does not swap 4xx responses, so it gets the form errors with a 200.
    return _page(request, form, status=200 if request.htmx else 400)


@login_required
@require_http_methods(["GET", "POST"])
def revoke(request: HttpRequest, public_id: str) -> HttpResponse:
    key = services.get_key(request.user, public_id)  # another user's key: 404
    if request.method == "GET":
        # The confirmation step for browsers without JS; with HTMX, hx-confirm asks instead.
        return render(request, "apikeys/revoke_confirm.html", {"nav": "keys", "key": key})
    key = services.revoke_key(request.user, public_id)
    if request.htmx:
        return render(request, f"{PAGE}#key-row", {"key": key})
    messages.success(request, f"Revoked “{key.name}” ({key.prefix}). It no longer works.")
    return redirect("apikeys:list")
