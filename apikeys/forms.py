from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.utils import timezone

from .services import NAME_MAX_LENGTH

EXPIRY_CHOICES = [("never", "Never"), ("30", "30 days"), ("90", "90 days"), ("365", "365 days")]


class CreateKeyForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        help_text="What uses it, e.g. “nightly import” or “ci-script”.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "ci-script"}),
    )
    expiry = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="90", label="Expires")

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data["expiry"]
        return None if days == "never" else timezone.now() + timedelta(days=int(days))
