"""DRF authentication with API keys: `X-API-Key: <key>` or `Authorization: Bearer <key>`.

No key header: returns None, so the next class (session authentication) gets its turn. A key header
that is present but wrong (malformed, bad checksum, unknown, wrong secret, expired, revoked, owner
deactivated) is a 401, never a silent fall-through to an anonymous request. So are two different
keys in the two headers: which one the request should run as is not ours to guess.
"""

from __future__ import annotations

from rest_framework import authentication, exceptions

from . import services
from .models import APIKey


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "bearer"
    www_authenticate_realm = "api"

    def authenticate(self, request) -> tuple[object, APIKey] | None:
        raw = self._presented_key(request)
        if raw is None:
            return None
        fetched = getattr(request, "poll_fetched", None)
        if fetched is not None and fetched.raw_key == raw:
            # Read with the rest of a status poll, in one round trip (jobs/poll.py).
            check = services.check_key(raw, fetched.entry)
        else:
            check = services.check_key(raw)
        if check.key is None:
            raise exceptions.AuthenticationFailed(check.reason)
        if not check.key.owner.is_active:
            raise exceptions.AuthenticationFailed("The owner of this API key is deactivated.")
        return (check.key.owner, check.key)

    def _presented_key(self, request) -> str | None:
        meta = request.META
        given = []
        if "HTTP_X_API_KEY" in meta:
            given.append(meta["HTTP_X_API_KEY"].strip())
        scheme, _, value = meta.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() == self.keyword:  # e.g. Basic: not ours
            given.append(value.strip())
        if not given:
            return None
        if len(set(given)) > 1:
            raise exceptions.AuthenticationFailed(
                "Two different API keys were sent (X-API-Key and Authorization: Bearer); send one."
            )
        return given[0]

    def authenticate_header(self, request) -> str:
        # Any value here makes DRF answer 401 (not 403) to unauthenticated requests.
        return f'Bearer realm="{self.www_authenticate_realm}"'
