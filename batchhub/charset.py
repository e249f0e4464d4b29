"""Refuse a request whose Content-Type charset is a codec but not a text encoding.

Django takes any codec Python knows as a request's charset: charset=zlib or base64 unpacks the
body as it is decoded (a small body became hundreds of megabytes of text), the escape codecs
rewrite it, and a page's form read with one ends in a LookupError (a 500).
"""

from __future__ import annotations

import codecs

from django.http import HttpResponse, JsonResponse

# Codecs that call themselves text encodings yet decode escapes or domain labels, or nothing.
_NOT_TEXT = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"})


def is_text_encoding(name: str) -> bool:
    try:
        info = codecs.lookup(name)
    except LookupError:
        return False
    return getattr(info, "_is_text_encoding", True) and info.name not in _NOT_TEXT


def refusal(charset: str) -> str:
    return (
        f"The body is sent with charset={charset[:40]}, which is not a text encoding read "
        "here; send it as UTF-8 text."
    )


class TextCharsetMiddleware:
    """Before anything reads the body (CSRF reads a form): a 415 naming the charset."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        encoding = request.encoding
        if encoding is None or is_text_encoding(encoding):
            return self.get_response(request)
        message = refusal(encoding)
        if request.path.startswith("/api/"):
            # The API's error body (batchhub.api.error_body, which imports this module).
            details = {"charset": encoding[:40]}
            error = {"code": "unsupported_media_type", "message": message, "details": details}
            return JsonResponse({"error": error}, status=415)
        return HttpResponse(message, status=415, content_type="text/plain; charset=utf-8")
