"""What the two polls answered below Django's stack share: when to try, which path is theirs, and
how an answer leaves.

The API status poll (jobs/fast_status.py) and the job page's poll (accounts/fast_page_poll.py)
each answer one GET from the cache when everything the answer needs is there, and hand the
request to the normal stack otherwise. Both recognise their URL around a job id learnt from the
project's own URLconf, leave alone what CommonMiddleware may answer itself, and give their answer
the headers of the middlewares they skip; keeping that here keeps the two in step.
BATCHHUB_FAST_STATUS=0 turns both off.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from django.conf import settings
from django.http import HttpResponse
from django.urls import NoReverseMatch, get_script_prefix, reverse

from .learnt_headers import LearntHeaders
from .weblog import ANSWERED_FROM_CACHE

SAMPLE_ID = "job_0"


class FastPathMiddleware:
    """Answers GETs of the URL named `route` (one argument: a job id) with `_answer`, if it can."""

    route: str

    def __init__(self, get_response, sample: Callable[[], HttpResponse]):
        self.get_response = get_response
        self._headers = LearntHeaders(sample)

    def __call__(self, request):
        if settings.BATCHHUB_FAST_STATUS and request.method == "GET":
            response = self._answer(request)
            if response is not None:
                return response
        return self.get_response(request)

    def _answer(self, request) -> HttpResponse | None:
        """The answer from the cache, or None: the normal stack answers."""
        raise NotImplementedError

    @cached_property
    def _around(self) -> tuple[str, str] | None:
        """The path before and after the job id, without the script prefix (as path_info)."""
        try:
            path = reverse(self.route, args=[SAMPLE_ID])
        except NoReverseMatch:
            return None  # a URLconf without this route (a test's): nothing to answer here
        head, tail = ("/" + path[len(get_script_prefix()) :]).split(SAMPLE_ID)
        return head, tail

    def _job_id(self, request) -> str | None:
        """The job id in the request's path when the path is this route's, else None."""
        around, path = self._around, request.path_info
        if around is None or not path.startswith(around[0]) or not path.endswith(around[1]):
            return None
        if settings.PREPEND_WWW or settings.DISALLOWED_USER_AGENTS:
            return None  # CommonMiddleware may answer these itself
        public_id = path[len(around[0]) : len(path) - len(around[1])]
        if not public_id or "/" in public_id:
            return None  # another route under the same path (jobs/validate, …/pause)
        return public_id

    def _answered(self, request, response: HttpResponse) -> HttpResponse:
        """`response` as the skipped middlewares would have sent it."""
        # gunicorn's access log counts these instead of writing a line each (batchhub/weblog.py).
        request.META[ANSWERED_FROM_CACHE] = True
        return self._headers.add(request, response)
