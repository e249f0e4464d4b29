"""Read an input's rows one at a time, as (line, values), from CSV, JSONL or the API's rows."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

from django.conf import settings

from batchhub import jsonsafe
from batchhub.jsonstream import JSONLines, loads_checked

from .detect import InputError, TableInfo, _csv_message, _dialect, _error, _flatten, _quote
from .fields import problem_field
from .text import (
    BAD_CHAR,
    Limits,
    TextProblem,
    TextStream,
    bad_char_problem,
    single_byte,
)


def _raise(line: int | None, column: int | None, message: str) -> None:
    raise InputError([_error(line, column, message)])


def max_line_bytes(columns: int | None = None) -> int:
    """The most bytes one line may take: `columns` fields (a JSONL line: the column limit's)."""
    field = settings.BATCHHUB_MAX_FIELD_BYTES
    columns = settings.BATCHHUB_MAX_COLUMNS if columns is None else columns
    return min(settings.BATCHHUB_MAX_ROW_BYTES, max(columns, 1) * (4 * field + 3) + 2)


def read_limits(info: TableInfo, deadline: float | None = None) -> Limits:
    """The bounds for reading this input: decompressed bytes, and bytes in one physical line.

    A CSV line holds at most its header's columns, each at most the field size (a character
    can take 4 bytes in UTF-8, and a quote doubles); a JSONL line at most the column limit's.
    """
    columns = len(info.columns) if info.format == "csv" else settings.BATCHHUB_MAX_COLUMNS
    line = max_line_bytes(columns)
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


def _problem_error(problem: TextProblem, column: int | None = None) -> InputError:
    return InputError([_error(problem.line, column, problem.message)], stop=problem.stop)


def _column_in_record(stream: TextStream, info: TableInfo, last: int) -> int | None:
    """The column of the csv module's complaint about the record that starts after line
    `last`: the file read again up to that record's problem. Only on the error path."""
    try:
        with stream.marked_lines() as lines:
            return problem_field(
                itertools.islice(lines, last, None),
                info.delimiter,
                settings.BATCHHUB_MAX_FIELD_BYTES,
                one_record=True,
            )
    except Exception:  # noqa: BLE001 -- the column is a nicety; the line is already named
        return None


class _BadCharFound(Exception):
    pass


def _records_before_bad_char(
    stream: TextStream, info: TableInfo, last: int, header_read: bool
) -> Generator[tuple[int, list[str]], None, InputError | None]:
    """After a read failed on a bad byte or NUL: the records after line `last` that end before
    it, then (returned) its problem with line and column, in one more pass over the file.

    The failed read decoded a block at a time, so the records of that block before the bad
    byte (up to thousands) were never read: without them the row count came out short, and
    their own problems unseen. They are read leniently here (the strict reader stopped on this
    block): a record with a stray quote among them passes.
    """
    found: list[tuple[int, re.Match, str]] = []
    pending: list[str] = []  # the lines of the record being read

    def up_to_bad():
        for _number, line in _lines_before_bad_char(stream, last, found):
            pending.append(line)
            yield line
        if found:
            raise _BadCharFound  # the record it cuts short is not one

    try:
        # Closed here, so that the file's marked read ends here whatever stops the reader.
        with contextlib.closing(up_to_bad()) as lines:
            reader = csv.reader(lines, **{**_dialect(info.delimiter), "strict": False})
            done = 0
            try:
                for record in reader:
                    start, done = last + done + 1, reader.line_num
                    pending.clear()
                    if not header_read:
                        header_read = bool(record)  # the header is not a row
                        continue
                    yield start, record
            except _BadCharFound:
                pass
    except (InputError, GeneratorExit):
        raise
    except Exception:  # noqa: BLE001 -- a damaged gzip further on: the caller names the line
        return None
    if not found:
        return None
    number, match, line = found[0]
    column = problem_field(
        [*pending, line],
        info.delimiter,
        settings.BATCHHUB_MAX_FIELD_BYTES,
        bad_char_only=True,
        one_record=True,
    )
    return _problem_error(bad_char_problem(number, stream.encoding, match), column)


def _read_failure(
    stream: TextStream, exc: Exception, last: int, info: TableInfo, header_read: bool
) -> Generator[tuple[int, list[str]], None, InputError]:
    """The InputError for an exception raised while reading records (after line `last`), after
    yielding the records a failed block held before its bad byte."""
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, csv.Error):
        column = _column_in_record(stream, info, last)
        return InputError([_error(last + 1, column, _csv_message(exc, last + 1))])
    if stream.is_bad_char(exc):
        failure = yield from _records_before_bad_char(stream, info, last, header_read)
        if failure is not None:
            return failure
    return _problem_error(stream.problem(exc, last))  # decoding, broken gzip; re-raises others


def csv_records(
    fileobj: BinaryIO, info: TableInfo, deadline: float | None = None
) -> Iterator[tuple[int, list[str]]]:
    """Every record after a CSV's header, as (line it starts on, fields); a blank line gives [].

    The one loop over a CSV's records, for iter_rows and for validation (and so the ingest):
    line numbers are physical lines, a record spanning lines is named by its first. Raises
    InputError for a problem that stops reading (bad bytes, broken quoting, a limit), naming
    its line, after every record before it.
    """
    stream, reader = _open_csv(fileobj, info, deadline)
    last = 0
    header_read = False
    with stream:
        try:
            last = _skip_header(stream, reader)
            header_read = True
            for record in reader:
                start = last + 1
                last = reader.line_num
                yield start, record
        except Exception as exc:
            failure = yield from _read_failure(stream, exc, last, info, header_read)
            raise failure from None


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


class _JSONLRows:
    """JSONL lines to rows: the problems of each line reported, lines that are no row counted
    against the row limit."""

    def __init__(self, info: TableInfo, report):
        self.objects = _Objects(info, report)
        self.report = report
        self.number = 0  # the last line read
        self.skipped = 0

    def rows(self, numbered: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list]]:
        max_skipped = settings.BATCHHUB_MAX_ROWS
        for number, line in numbered:
            self.number = number
            values = None if line.isspace() else self._values(number, line)
            if values is not None:
                yield number, values
                continue
            # Blank lines and lines that are no row count against the row limit too, so a
            # file of a billion of them is not read to its end.
            self.skipped += 1
            if self.skipped > max_skipped:
                _raise(
                    number,
                    None,
                    f"The file has more than {max_skipped:,} lines that are blank or not "
                    f"rows (line {number} is one); reading stopped there.",
                )

    def _values(self, number: int, line: str) -> list | None:
        report, columns = self.report, self.objects.columns
        try:
            obj = jsonsafe.loads(line)
        except jsonsafe.JSONLimitError as exc:
            report(*_limit_problem(exc, number, f"Line {number}", columns))
            return None
        except ValueError as exc:
            detail = f"{exc.msg} at character {exc.colno}" if hasattr(exc, "colno") else str(exc)
            report(number, None, f"Line {number} is not valid JSON ({detail}).")
            return None
        if "\\u0000" in line:
            report(number, None, _nul_message(f"Line {number}"))
            return None
        return self.objects.align(obj, number, f"Line {number}", len(line))


def _nul_message(what: str) -> str:
    # A NUL written as its escape in a JSON line: jsonb and text columns refuse it.
    return f"{what} contains a NUL character (\\u0000), which cannot be stored."


def _lines_before_bad_char(
    stream: TextStream, after: int, found: list
) -> Iterator[tuple[int, str]]:
    """The lines after line `after` up to the file's first bad byte, read again; that byte's
    line number, match and line are put in `found`."""
    with stream.marked_lines() as lines:
        for number, line in enumerate(lines, 1):
            if number <= after:
                continue
            match = BAD_CHAR.search(line)
            if match is not None:
                found.append((number, match, line))
                return
            yield number, line


def _iter_jsonl(
    fileobj: BinaryIO, info: TableInfo, report, deadline: float | None = None
) -> Iterator[tuple[int, list]]:
    rows = _JSONLRows(info, report)
    limits = read_limits(info, deadline)
    with TextStream(fileobj, info.encoding, info.compressed, limits) as stream:
        try:
            yield from rows.rows(enumerate(stream.lines, 1))
        except InputError:
            raise
        except Exception as exc:
            if stream.is_bad_char(exc):
                # The failed read lost the lines of its block before the bad byte: read them
                # again, so they are counted and checked, then name the byte.
                found: list = []
                yield from rows.rows(_lines_before_bad_char(stream, rows.number, found))
                if found:
                    number, match, _line = found[0]
                    raise _problem_error(bad_char_problem(number, stream.encoding, match)) from None
            raise _problem_error(stream.problem(exc, rows.number)) from None


def _iter_lines(rows: JSONLines, info: TableInfo, report) -> Iterator[tuple[int, list]]:
    """Rows read from a JSON body a row at a time: jsonsafe's bounds were checked as each was
    read, and each line is the row's own text, so its size and a NUL are seen there."""
    objects = _Objects(info, report)
    loads = loads_checked
    for number, line in enumerate(rows.lines(), 1):
        if "\\u0000" in line:
            report(number, None, _nul_message(f"Row {number}"))
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
                report(number, None, _nul_message(f"Row {number}"))
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
