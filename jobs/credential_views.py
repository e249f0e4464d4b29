"""Settings → Provider credentials: list, add, replace and delete a user's saved API keys.

The page never shows a secret after it is saved, only its name and a masked hint; the LLM
processor's ``credential`` param names one of these.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods, require_POST

from . import credentials as service


class CredentialForm(forms.Form):
    name = forms.CharField(
        max_length=50,
        help_text=(
            "Lowercase letters, digits, '-' or '_'. Saving an existing name replaces its secret."
        ),
    )
    secret = forms.CharField(
        max_length=service.MAX_SECRET_LENGTH,
        strip=True,
        # render_value=False: a failed submission must not send the secret back to the browser.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The provider's API key. It is encrypted at rest and never shown again.",
    )

    def clean_name(self) -> str:
        try:
            return service.clean_name(self.cleaned_data["name"])
        except service.CredentialError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_secret(self) -> str:
        try:
            return service.clean_secret(self.cleaned_data["secret"])
        except service.CredentialError as exc:
            raise forms.ValidationError(str(exc)) from None


def _url(request: HttpRequest, name: str, *args: str) -> str:
    # Works whether the patterns are mounted at the root of the URLconf or inside a namespace.
    namespace = request.resolver_match.namespace if request.resolver_match else ""
    return reverse(f"{namespace}:{name}" if namespace else name, args=args)


def _list_url(request: HttpRequest) -> str:
    return _url(request, "credentials")


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
        return redirect(_list_url(request))
    context = {
        "nav": "settings",
        "form": form,
        "credentials": [
            {"info": info, "delete_url": _url(request, "credential_delete", info.name)}
            for info in service.list_credentials(request.user)
        ],
    }
    return render(request, "jobs/credentials.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def credential_delete(request: HttpRequest, name: str) -> HttpResponse:
    if not service.delete_credential(request.user, name):
        raise Http404("No such credential.")
    messages.success(request, f"Deleted credential “{name}”.")
    return redirect(_list_url(request))


credential_urlpatterns = [
    path("", credentials, name="credentials"),
    path("<slug:name>/delete/", credential_delete, name="credential_delete"),
]
