"""Read an input's rows one at a time, as (line, values), from CSV, JSONL or the API's rows."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from django.conf import settings

from batchhub import jsonsafe
from batchhub.jsonstream import JSONLines, loads_checked

from .detect import InputError, TableInfo, _csv_message, _dialect, _error, _flatten, _quote
from .text import (
    BAD_CHAR,
    Limits,
    TextProblem,
    TextStream,
    single_byte,
)


def _raise(line: int | None, column: int | None, message: str) -> None:
    raise InputError([_error(line, column, message)])


def read_limits(info: TableInfo, deadline: float | None = None) -> Limits:
    """The bounds for reading this input: decompressed bytes, and bytes in one physical line.

    A CSV line holds at most its header's columns, each at most the field size (a character
    can take 4 bytes in UTF-8, and a quote doubles); a JSONL line at most the column limit's.
    """
    field = settings.BATCHHUB_MAX_FIELD_BYTES
    columns = len(info.columns) if info.format == "csv" else settings.BATCHHUB_MAX_COLUMNS
    line = min(settings.BATCHHUB_MAX_ROW_BYTES, max(columns, 1) * (4 * field + 3) + 2)
    legacy = info.encoding is not None and single_byte(info.encoding)
    max_bytes = (
        settings.BATCHHUB_MAX_DECOMPRESSED_BYTES
        if info.compressed
        else max(settings.BATCHHUB_MAX_UPLOAD_BYTES, settings.BATCHHUB_MAX_DECOMPRESSED_BYTES)
    )
    return Limits(
        max_bytes=max_bytes,
        max_line=line,
        utf8_check=legacy,
        deadline=deadline,
        max_blank=settings.BATCHHUB_MAX_ROWS,
    )


def _open_csv(
    fileobj: BinaryIO, info: TableInfo, deadline: float | None = None
) -> tuple[TextStream, Any]:
    # The csv module's limit is global; it is set on every read so a changed setting applies.
    csv.field_size_limit(settings.BATCHHUB_MAX_FIELD_BYTES)
    stream = TextStream(fileobj, info.encoding, info.compressed, read_limits(info, deadline))
    return stream, csv.reader(stream.lines, **_dialect(info.delimiter))


def _skip_header(stream: TextStream, reader) -> int:
    """Check the bytes, read past the header (and blank lines before it); returns its line."""
    stream.check_nul()
    for record in reader:
        if record:
            break
    return reader.line_num


_UNCLOSED = "unexpected end of data"  # the csv module's words for a file ending inside quotes


def _unclosed_quote_column(stream: TextStream, info: TableInfo, last: int) -> int | None:
    """The column whose quote is never closed: the record that starts after line `last`, read
    again without strictness, ends in that field. Only on the error path."""
    try:
        with stream.marked_lines() as lines:
            rest = itertools.islice(lines, last, None)
            record = next(csv.reader(rest, **{**_dialect(info.delimiter), "strict": False}), None)
    except Exception:  # noqa: BLE001 -- the column is a nicety; the line is already named
        return None
    return len(record) if record else None


def _read_failure(stream: TextStream, exc: Exception, last: int, info: TableInfo) -> InputError:
    """The InputError for an exception raised while reading records (after line `last`)."""
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, csv.Error):
        column = _unclosed_quote_column(stream, info, last) if _UNCLOSED in str(exc) else None
        return InputError([_error(last + 1, column, _csv_message(exc, last + 1))])
    problem = stream.problem(exc, last)  # decoding, NUL bytes, broken gzip; re-raises others
    column = _bad_char_column(stream, info) if problem.bad_char else None
    return _problem_error(problem, column)


def _problem_error(problem: TextProblem, column: int | None = None) -> InputError:
    return InputError([_error(problem.line, column, problem.message)], stop=problem.stop)


def _bad_char_column(stream: TextStream, info: TableInfo) -> int | None:
    """The column (field number) holding a CSV's first bad byte or NUL, from a second pass that
    parses records (a quoted field may span lines); only on the error path."""
    try:
        with stream.marked_lines() as lines:
            for record in csv.reader(lines, **_dialect(info.delimiter)):
                for number, field in enumerate(record, 1):
                    if BAD_CHAR.search(field):
                        return number
    except Exception:  # noqa: BLE001 -- the column is a nicety; the line is already named
        return None
    return None


def csv_records(
    fileobj: BinaryIO, info: TableInfo, deadline: float | None = None
) -> Iterator[tuple[int, list[str]]]:
    """Every record after a CSV's header, as (line it starts on, fields); a blank line gives [].

    The one loop over a CSV's records, for iter_rows and for validation (and so the ingest):
    line numbers are physical lines, a record spanning lines is named by its first. Raises
    InputError for a problem that stops reading (bad bytes, broken quoting, a limit), naming
    its line.
    """
    stream, reader = _open_csv(fileobj, info, deadline)
    last = 0
    with stream:
        try:
            last = _skip_header(stream, reader)
            for record in reader:
                start = last + 1
                last = reader.line_num
                yield start, record
        except Exception as exc:
            raise _read_failure(stream, exc, last, info) from None


def _iter_csv(fileobj: BinaryIO, info: TableInfo) -> Iterator[tuple[int, list]]:
    width = len(info.columns)
    for start, record in csv_records(fileobj, info):
        if record:  # blank lines are skipped
            # The header's unnamed trailing columns are no columns (validate checks them empty).
            yield start, record[:width] if info.unnamed_tail else record


def _kind(obj: Any) -> str:
    return {list: "a JSON array", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(obj), "a number"
    )


class _Objects:
    """Aligns JSON objects to a growing column list: keys not seen before are appended."""

    def __init__(self, info: TableInfo, report):
        self.info = info
        self.columns = info.columns
        self.index = {name: i for i, name in enumerate(self.columns)}
        self.report = report
        self.limit = settings.BATCHHUB_MAX_FIELD_BYTES
        self.max_columns = settings.BATCHHUB_MAX_COLUMNS
        if len(self.columns) > self.max_columns or any(not c.strip() for c in self.columns):
            # Detection took these from the first row, which then matched them and skipped the
            # checks every new key meets: start empty, so that row is held to them too.
            self.columns.clear()
            self.index.clear()

    def align(self, obj: Any, line: int, what: str, size: int) -> list | None:
        if type(obj) is not dict:
            self.report(
                line,
                None,
                f"{what} is {_kind(obj)}, not a JSON object; "
                'each row must be an object like {"column": "value"}.',
            )
            return None
        obj = _flatten(obj)
        columns = self.columns
        if list(obj) == columns:
            values = list(obj.values())
        else:
            index = self.index
            for key in obj:
                if key in index:
                    continue
                if not key.strip():
                    self.report(
                        line, None, f"{what} has a key with no name; every key names a column."
                    )
                    return None
                if len(columns) >= self.max_columns:
                    _raise(
                        line,
                        len(columns) + 1,
                        f"{what} brings the number of columns over the limit of "
                        f"{self.max_columns:,}.",
                    )
                index[key] = len(columns)
                columns.append(key)
            values = [None] * len(columns)
            for key, value in obj.items():
                values[index[key]] = value
        if size > self.limit:
            for number, value in enumerate(values, 1):
                if len(value if type(value) is str else json.dumps(value)) > self.limit:
                    self.report(
                        line,
                        number,
                        f"{what} has a value in column {_quote(columns[number - 1])} longer than "
                        f"the limit of {self.limit:,} characters.",
                    )
                    return None
        return values


def _limit_problem(
    exc: jsonsafe.JSONLimitError, line: int, what: str, columns: list[str]
) -> tuple[int, int | None, str]:
    """(line, column, message) for JSON that breaks a bound; the column is its top-level key."""
    key = exc.path[0] if exc.path and isinstance(exc.path[0], str) else None
    if key is None:
        # A row's own key given twice: that key is the column.
        column = columns.index(exc.key) + 1 if not exc.path and exc.key in columns else None
        return line, column, f"{what} {exc.phrase()}."
    column = columns.index(key) + 1 if key in columns else None
    inner = f" at {jsonsafe.format_path(exc.path)}" if len(exc.path) > 1 else ""
    return line, column, f"{what} {exc.phrase(f'in column {_quote(key)}{inner}')}."


def _iter_jsonl(
    fileobj: BinaryIO, info: TableInfo, report, deadline: float | None = None
) -> Iterator[tuple[int, list]]:
    objects = _Objects(info, report)
    loads = jsonsafe.loads
    number = skipped = 0
    max_skipped = settings.BATCHHUB_MAX_ROWS
    limits = read_limits(info, deadline)
    with TextStream(fileobj, info.encoding, info.compressed, limits) as stream:
        try:
            for number, line in enumerate(stream.lines, 1):
                values = None
                if not line.isspace():
                    try:
                        obj = loads(line)
                    except jsonsafe.JSONLimitError as exc:
                        report(*_limit_problem(exc, number, f"Line {number}", objects.columns))
                    except ValueError as exc:
                        detail = (
                            f"{exc.msg} at character {exc.colno}"
                            if hasattr(exc, "colno")
                            else str(exc)
                        )
                        report(number, None, f"Line {number} is not valid JSON ({detail}).")
                    else:
                        if "\\u0000" in line:
                            report(
                                number,
                                None,
                                f"Line {number} contains a NUL character (\\u0000), "
                                "which cannot be stored.",
                            )
                        else:
                            values = objects.align(obj, number, f"Line {number}", len(line))
                if values is not None:
                    yield number, values
                    continue
                # Blank lines and lines that are no row count against the row limit too, so a
                # file of a billion of them is not read to its end.
                skipped += 1
                if skipped > max_skipped:
                    _raise(
                        number,
                        None,
                        f"The file has more than {max_skipped:,} lines that are blank or not "
                        f"rows (line {number} is one); reading stopped there.",
                    )
        except InputError:
            raise
        except Exception as exc:
            raise _problem_error(stream.problem(exc, number)) from None


def _iter_lines(rows: JSONLines, info: TableInfo, report) -> Iterator[tuple[int, list]]:
    """Rows read from a JSON body a row at a time: jsonsafe's bounds were checked as each was
    read, and each line is the row's own text, so its size and a NUL are seen there."""
    objects = _Objects(info, report)
    loads = loads_checked
    for number, line in enumerate(rows.lines(), 1):
        if "\\u0000" in line:
            report(
                number,
                None,
                f"Row {number} contains a NUL character (\\u0000), which cannot be stored.",
            )
            continue
        values = objects.align(loads(line), number, f"Row {number}", len(line))
        if values is not None:
            yield number, values


def _iter_list(rows: list, info: TableInfo, report) -> Iterator[tuple[int, list]]:
    objects = _Objects(info, report)
    for number, obj in enumerate(rows, 1):
        size = 0
        if type(obj) is dict:
            try:
                dumped = json.dumps(obj, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                try:
                    jsonsafe.check_value(obj)
                except jsonsafe.JSONLimitError as exc:
                    report(*_limit_problem(exc, number, f"Row {number}", objects.columns))
                else:
                    report(number, None, f"Row {number} holds a value that is not JSON.")
                continue
            if "\\u0000" in dumped:
                report(
                    number,
                    None,
                    f"Row {number} contains a NUL character (\\u0000), which cannot be stored.",
                )
                continue
            size = len(dumped)
        values = objects.align(obj, number, f"Row {number}", size)
        if values is not None:
            yield number, values


def _iter_source(
    source, info: TableInfo, report, deadline: float | None = None
) -> Iterator[tuple[int, list]]:
    if info.format == "rows":
        if isinstance(source, JSONLines):
            return _iter_lines(source, info, report)
        return _iter_list(source, info, report)
    if info.format == "jsonl":
        return _iter_jsonl(source, info, report, deadline)
    return _iter_csv(source, info)


def iter_rows(fileobj: BinaryIO, info: TableInfo) -> Iterator[tuple[int, list]]:
    """Stream (line number, values) for every data row of a file that `inspect` described.

    CSV values are strings in header order (no field-count check: `validate` does that). For
    JSONL and rows, keys not seen before are appended to `info.columns` as they appear, and a
    row's list covers the columns known when it was read (readers pad shorter ones with None).
    `fileobj` may also be the list of row objects when `info.format == "rows"`.
    Raises InputError on the first problem (bad bytes, broken quoting, a line that is not JSON).
    """
    return _iter_source(fileobj, info, _raise)
