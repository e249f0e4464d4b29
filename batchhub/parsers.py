"""The API's parsers: DRF's, refusing a compressed body, and for JSON with the bounds of
batchhub.jsonsafe (depth, finite numbers, unique keys).

DRF's own JSON parser lets a deeply nested body end in a RecursionError (a 500) and turns 1e400
into float infinity, which no JSON reader or database column accepts later. None of DRF's
parsers looks at Content-Encoding: a gzip body was read as its compressed bytes.
"""

from __future__ import annotations

import codecs

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

from . import jsonsafe, jsonstream
from .api import APIError, UnsupportedCharset, UnsupportedContentEncoding, raise_if_cut_short
from .charset import is_text_encoding


def refuse_content_coding(parser_context: dict | None) -> None:
    request = (parser_context or {}).get("request")
    coding = (getattr(request, "META", {}).get("HTTP_CONTENT_ENCODING") or "").strip()
    if coding and coding.lower() != "identity":
        raise UnsupportedContentEncoding(coding)


def text_encoding(parser_context: dict | None) -> str:
    """The request's charset, if it is a text encoding (batchhub/charset.py); else a 415."""
    encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
    if not is_text_encoding(encoding):
        raise UnsupportedCharset(encoding)
    return encoding


def _django_request(parser_context: dict | None):
    request = (parser_context or {}).get("request")
    return getattr(request, "_request", request)


class PlainMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        refuse_content_coding(parser_context)
        text_encoding(parser_context)
        parsed = super().parse(stream, media_type, parser_context)
        # Django's parser reads the body to its end: a part cut off there was dropped unseen.
        raise_if_cut_short(_django_request(parser_context))
        return parsed


class PlainFormParser(FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        refuse_content_coding(parser_context)
        text_encoding(parser_context)
        return super().parse(stream, media_type, parser_context)


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        refuse_content_coding(parser_context)
        encoding = text_encoding(parser_context)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"The JSON body is not valid {encoding} text ({exc.reason})."
            ) from None
        raise_if_cut_short(_django_request(parser_context))
        try:
            return self.loads(text)
        except jsonsafe.JSONLimitError as exc:
            where = None
            if exc.char is not None:
                line, column = jsonsafe.line_and_column(text, exc.char)
                where = f"at line {line}, column {column}"
            raise ParseError(f"The JSON body {exc.phrase(where)}.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None

    def loads(self, text: str):
        return jsonsafe.loads(text)


class StreamedRowsJSONParser(BoundedJSONParser):
    """JSON whose big list fields, those the view names in `streamed_json_fields` (a job's
    `rows`), are read an item at a time into a file of JSON lines (jsonstream.JSONLines)
    instead of a Python object per item: a large body costs the web process about its size
    rather than many times it."""

    def parse(self, stream, media_type=None, parser_context=None):
        view = (parser_context or {}).get("view")
        self.streamed = tuple(getattr(view, "streamed_json_fields", ()))
        self.objects_only = tuple(getattr(view, "object_json_fields", ()))
        return super().parse(stream, media_type, parser_context)

    def loads(self, text: str):
        if not self.streamed:
            return jsonsafe.loads(text)
        try:
            # Past the rows a job may hold the rest is refused anyway: not read.
            return jsonstream.loads_object(
                text,
                self.streamed,
                stop_after=settings.BATCHHUB_MAX_ROWS,
                objects_only=self.objects_only,
            )
        except jsonstream.NotAnObject:
            # The fields come in an object; anything else is refused (a list unread), with the
            # details a serializer gives a body that is not an object.
            message = (
                "The JSON body must be an object of the request's fields, such as "
                '{"processor": …, "rows": […]}.'
            )
            raise APIError(message, details={"non_field_errors": [message]}) from None
