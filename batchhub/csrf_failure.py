"""The answer to a refused CSRF check: Django's own 403 page, and for htmx a reload of the page.

htmx posts every form of a page with the token the page was rendered with (templates/base.html's
`hx-headers`). Signing in again in another tab of the same browser rotates the CSRF secret, so
that page's token stops matching the cookie and each of its buttons would get a 403 that htmx
swaps nowhere: a click that silently does nothing. `HX-Refresh` makes htmx reload the page,
which brings a token of the current secret; the user clicks again on a page that works. A reload
is a GET, which is never checked, so it cannot loop.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views import csrf


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    response = csrf.csrf_failure(request, reason)
    if request.headers.get("HX-Request") == "true":
        response["HX-Refresh"] = "true"
    return response
