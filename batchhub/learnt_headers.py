"""The headers some middlewares add to an answer made below them, learnt once from those
middlewares themselves.

The status polls are answered below most of Django's stack (jobs/fast_status.py,
accounts/fast_page_poll.py). Of the middlewares they skip, a few still add headers to such an
answer (CSP, Content-Length, X-Frame-Options), and what they add depends on settings alone. So a
sample answer is run through them once per process, and again after a setting changes
(override_settings); each fast answer then gets the same headers, Content-Length its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse
from django.utils.module_loading import import_string

# Middlewares whose response side adds headers to a poll's answer, by what they add; the others
# below the fast paths do nothing to it or act only on requests those paths never take.
HEADER_MIDDLEWARE = (
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
_CONTENT_LENGTH = "Content-Length"

# Bumped whenever a setting changes: the headers are learnt again.
_settings_generation = 0


@receiver(setting_changed)
def _settings_changed(**kwargs) -> None:
    global _settings_generation
    _settings_generation += 1


def _unused(request):  # the header middlewares only get their process_response called
    raise AssertionError("not called")


class LearntHeaders:
    """What HEADER_MIDDLEWARE (those of settings.MIDDLEWARE) add to answers `sample` stands for."""

    def __init__(
        self, sample: Callable[[], HttpResponse], paths: Iterable[str] = HEADER_MIDDLEWARE
    ):
        self._sample = sample
        self._paths = tuple(paths)
        self._middleware: tuple[int, list] | None = None
        self._added: tuple[int, list[tuple[str, str | None]]] | None = None

    def add(self, request, response: HttpResponse) -> HttpResponse:
        """`response` with the headers, in the order the middlewares add them."""
        headers = response.headers
        for name, value in self._headers(request):
            headers[name] = str(len(response.content)) if value is None else value
        return response

    def _headers(self, request) -> list[tuple[str, str | None]]:
        generation = _settings_generation
        added = self._added
        if added is None or added[0] != generation:
            sample = self._sample()
            before = set(sample.headers)
            for middleware in self._chosen(generation):
                sample = middleware.process_response(request, sample)
            headers = [
                (name, None if name == _CONTENT_LENGTH else value)
                for name, value in sample.headers.items()
                if name not in before
            ]
            added = self._added = (generation, headers)
        return added[1]

    def _chosen(self, generation: int) -> list:
        # The stack runs response sides in reverse order of settings.MIDDLEWARE.
        if self._middleware is None or self._middleware[0] != generation:
            order = settings.MIDDLEWARE
            chosen = sorted((p for p in self._paths if p in order), key=order.index)
            self._middleware = (generation, [import_string(p)(_unused) for p in reversed(chosen)])
        return self._middleware[1]
