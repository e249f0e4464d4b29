"""The API status poll (`GET /api/v1/jobs/<id>` with an API key) answered below Django's stack.

A poll's answer comes from one cache trip (jobs/poll.py: the key's entry, the job's live status
and the rate limit's count), yet going through every middleware, URL resolution and DRF's
request, negotiation and renderer costs several times that (docs/performance.md). This
middleware sits right after SecurityMiddleware and answers that one request when, and only
when, everything it needs is in the cache: a key the key cache knows (valid, not revoked, active
owner), the job's live-status key belonging to that owner, and the rate limit DRF applies letting
it through. Anything else goes on down the normal stack, which then answers exactly as it always
has (a 401, a 404, a 429, the database's answer), taking what the trip read and counted instead
of reading it again.

The answer is DRF's: the same job object rendered by DRF's own JSON renderer, the same `Allow`
header the view sets, and the response headers of the middlewares it skips that add headers to
such an answer (CSP, Content-Length, X-Frame-Options), as those middlewares add them
(batchhub/learnt_headers.py).
tests/api/test_fast_status.py compares both paths byte for byte. The body is rendered once a
second per job and state and reused within it (jobs/status_memo.py); the key check, the rate
limit and the owner are still checked on every request. BATCHHUB_FAST_STATUS=0 turns it off.
"""

from __future__ import annotations

import logging
from functools import cached_property

from django.http import HttpResponse
from django.urls import resolve
from rest_framework.renderers import JSONRenderer

from apikeys.auth import APIKeyAuthentication
from apikeys.services import known_owner_id
from batchhub.api import GroupRateThrottle
from batchhub.fast_path import SAMPLE_ID, FastPathMiddleware

from . import poll, status_memo
from .representation import job_representation

logger = logging.getLogger(__name__)

ROUTE = "api-jobs-detail"
ACTION = "retrieve"
# Accept headers DRF's negotiation answers with the plain JSON renderer (any other: the stack).
_PLAIN_ACCEPT = frozenset({"", "*/*", "application/json"})


class _Owner:
    """The asking user as the status memo and livestatus.read use them: their id only."""

    __slots__ = ("pk",)

    def __init__(self, pk: int) -> None:
        self.pk = pk


class FastStatusMiddleware(FastPathMiddleware):
    route = ROUTE

    def __init__(self, get_response):
        super().__init__(get_response, lambda: self._bare_response(b""))
        self._authentication = APIKeyAuthentication()
        self._renderer = JSONRenderer()

    # --- set up once, from the project's own URLconf and view -----------------------------------

    @cached_property
    def _view(self):
        """The view instance DRF builds for the route, for its `Allow` header and its throttles."""
        head, tail = self._around
        func = resolve(head + SAMPLE_ID + tail).func
        view = func.cls(**func.initkwargs)
        view.action_map = func.actions
        for method, action in func.actions.items():
            setattr(view, method, getattr(view, action))
        if hasattr(view, "get") and not hasattr(view, "head"):
            view.head = view.get  # as ViewSetMixin.as_view does
        view.action = func.actions["get"]
        assert view.action == ACTION, view.action
        return view

    @cached_property
    def _allow(self) -> str:
        return ", ".join(self._view.allowed_methods)

    # --- one request ------------------------------------------------------------------------------

    def _answer(self, request) -> HttpResponse | None:
        public_id = self._own_job_id(request)
        if public_id is None or self._view.throttle_classes != [GroupRateThrottle]:
            return None  # the count made with the reads is GroupRateThrottle's
        try:
            request.get_host()  # a host not allowed: the stack answers its 400
            raw = self._authentication._presented_key(request)
            if not raw:
                return None
            throttle = GroupRateThrottle()
            scope = throttle.get_scope(request, self._view)
            fetched = poll.fetch(raw, public_id, scope=scope, now=throttle.timer())
            if fetched is None:
                return None
            # The request may be counted now: if the stack answers, it takes this count.
            poll.hand_over(request, fetched)
            owner_id = known_owner_id(fetched.lookup_id, fetched.entry)
            if owner_id is None:
                return None
            counted = fetched.rate_counted
            if counted is None or not counted[1].allowed:
                return None  # the stack answers (the 429, or counts on its own)
            body = status_memo.body(
                request,
                _Owner(owner_id),
                public_id,
                fetched.live,
                lambda job: self._render(request, job),
            )
        except Exception:
            logger.debug("fast status: handing over to the stack", exc_info=True)
            return None
        if body is None:
            return None  # the stack answers (a 404, the database's answer)
        return self._respond(request, public_id, body)

    def _own_job_id(self, request) -> str | None:
        """The job id of a plain status request (no query, JSON or any answer), else None."""
        if request.META.get("QUERY_STRING"):
            return None
        if request.META.get("HTTP_ACCEPT", "").strip() not in _PLAIN_ACCEPT:
            return None
        public_id = self._job_id(request)
        if public_id is None or not public_id.startswith("job_"):
            return None  # not a job id: the stack answers its 404
        return public_id

    def _render(self, request, job) -> bytes:
        return self._renderer.render(job_representation(job, request))

    def _respond(self, request, public_id: str, body: bytes) -> HttpResponse:
        return self._answered(request, self._bare_response(body))

    def _bare_response(self, body: bytes) -> HttpResponse:
        response = HttpResponse(body, content_type=self._renderer.media_type)
        response["Allow"] = self._allow
        return response
