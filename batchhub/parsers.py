"""The API's JSON parser: DRF's, with the bounds of batchhub.jsonsafe (depth, finite numbers).

DRF's own parser lets a deeply nested body end in a RecursionError (a 500) and turns 1e400 into
float infinity, which no JSON reader or database column accepts later.
"""

from __future__ import annotations

import codecs

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from . import jsonsafe


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"The JSON body is not valid {encoding} text ({exc.reason})."
            ) from None
        try:
            return jsonsafe.loads(text)
        except jsonsafe.JSONLimitError as exc:
            where = None
            if exc.char is not None:
                line, column = jsonsafe.line_and_column(text, exc.char)
                where = f"at line {line}, column {column}"
            raise ParseError(f"The JSON body {exc.phrase(where)}.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
