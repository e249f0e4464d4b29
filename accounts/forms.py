"""The credentials page's form: a name and a secret, checked by jobs.credentials' own rules."""

from __future__ import annotations

from django import forms

from jobs import credentials as service


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
