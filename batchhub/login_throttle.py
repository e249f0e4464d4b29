"""Failed logins are throttled per account and per client address.

Each wrong password counts once in the account's bucket and once in the address's (the
sliding-window counter of the API's rate limits, in the shared cache). While either bucket is
full, the login form refuses without checking the password, so guessing stops dead for that
account and that address, and the answer says when to try again. API keys never pass through
here: a script's requests are not slowed by someone guessing a password.

The check comes before the password and the count after it, so attempts already in flight when
a bucket fills still finish: at most as many extra guesses as the web server runs requests at
once, after which every attempt is refused until the window slides.
"""

from __future__ import annotations

import hashlib
import math
import time

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache

from . import sliding_window

_now = time.time  # tests drive a clock through this


def client_address(request) -> str:
    """The address the request came from: REMOTE_ADDR, or behind our proxy the one it saw."""
    if settings.BATCHHUB_BEHIND_PROXY:
        # The proxy appends the address it saw; anything before it the client may have made up.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _buckets(request, username: str) -> list[tuple[str, int]]:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [
        (f"login:account:{account}", settings.BATCHHUB_LOGIN_MAX_FAILURES),
        (
            f"login:address:{client_address(request)}",
            settings.BATCHHUB_LOGIN_MAX_FAILURES_PER_ADDRESS,
        ),
    ]


def seconds_blocked(request, username: str) -> int:
    """0 if a login may be tried now, else the seconds until one may."""
    period, now = settings.BATCHHUB_LOGIN_FAILURE_WINDOW, _now()
    wait = 0.0
    for key, limit in _buckets(request, username):
        outcome = sliding_window.peek(cache, key, limit, period, now)
        if not outcome.allowed:
            wait = max(wait, sliding_window.wait_seconds(outcome, limit, period, now))
    return math.ceil(wait) if wait else 0


def record_failure(request, username: str) -> None:
    period, now = settings.BATCHHUB_LOGIN_FAILURE_WINDOW, _now()
    for key, limit in _buckets(request, username):
        sliding_window.hit(cache, key, limit, period, now)


def blocked_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    when = "a minute" if minutes == 1 else f"{minutes} minutes"
    return f"Too many failed logins for this account or from your address. Try again in {when}."


class ThrottledLoginMixin:
    """For an AuthenticationForm: refuses while throttled, counts each wrong password."""

    retry_after = 0

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        self.retry_after = seconds_blocked(self.request, username)
        if self.retry_after:
            raise forms.ValidationError(blocked_message(self.retry_after), code="throttled")
        try:
            return super().clean()
        except forms.ValidationError as exc:
            if getattr(exc, "code", None) == "invalid_login":
                record_failure(self.request, username)
            raise


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


class ThrottledLoginView(LoginView):
    """The site's login page: a throttled attempt answers 429 with Retry-After."""

    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.retry_after:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response
