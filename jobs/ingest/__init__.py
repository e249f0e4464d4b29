"""Job input: read, check and write it as rows, and the worker's side of a job's ingest.

Input is a CSV (comma, semicolon, tab or pipe; optionally gzip-compressed), JSONL (one object per
line, including PromptLoop's `{"data_uuid", "inputs": [...]}` shape) or the API's JSON `rows`.
Files are streamed: only a 64 KB sample is held for detection, and rows pass through one at a
time, so a 100 MB upload takes no more memory than a small one (bar 8-byte id digests).

Every problem becomes `{"line", "column", "message"}`: 1-based physical line numbers in the file
(the header is line 1; a record spanning lines is named by the line it starts on; for `rows`, the
item's position in the list) and 1-based column numbers where a column is involved.

Modules: text (bytes to text), detect (format and header), read (rows one at a time), validation
(the one streaming pass), db (bulk writes), loading (a job's ingest on a worker).
"""

from __future__ import annotations

from .db import write_rows
from .detect import MAX_ERRORS, PREVIEW_ROWS, InputError, Report, TableInfo, inspect
from .read import iter_rows, read_limits
from .text import Stop
from .validation import validate

__all__ = [
    "MAX_ERRORS",
    "PREVIEW_ROWS",
    "InputError",
    "Report",
    "Stop",
    "TableInfo",
    "inspect",
    "iter_rows",
    "read_limits",
    "validate",
    "write_rows",
]
