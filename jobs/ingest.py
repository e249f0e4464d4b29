"""Read and validate job input, and write its rows in bulk.

Input is a CSV (comma, semicolon, tab or pipe; optionally gzip-compressed), JSONL (one object per
line, including PromptLoop's `{"data_uuid", "inputs": [...]}` shape) or the API's JSON `rows`.
Files are streamed: only a 64 KB sample is held for detection, and rows pass through one at a
time, so a 100 MB upload takes no more memory than a small one (bar 8-byte id digests).

Every problem becomes `{"line", "column", "message"}`: 1-based physical line numbers in the file
(the header is line 1; a record spanning lines is named by the line it starts on; for `rows`, the
item's position in the list) and 1-based column numbers where a column is involved.
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.conf import settings

from batchhub import jsonsafe

from .ingest_text import (
    SAMPLE_BYTES,
    Limits,
    TextProblem,
    TextStream,
    decode_sample,
    detect_encoding,
    is_gzip,
    read_sample,
    single_byte,
)

MAX_ERRORS = 100
PREVIEW_ROWS = 10
DELIMITERS = (",", "\t", ";", "|")  # also the order of preference when the sample can't decide
_SNIFF_RECORDS = 100
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")
_PROMPTLOOP_KEYS = frozenset({"data_uuid", "inputs"})
_JSONL_NAMES = (".jsonl", ".ndjson")


class InputError(Exception):
    """The input cannot become a job. `errors` holds at most MAX_ERRORS problems, `total` all."""

    def __init__(self, errors: list[dict], total: int | None = None):
        self.errors = list(errors)[:MAX_ERRORS]
        self.total = max(total or 0, len(errors))
        self.info: TableInfo | None = None
        super().__init__(self.errors[0]["message"] if self.errors else "The input is not valid.")


@dataclass
class TableInfo:
    format: str  # "csv" | "jsonl" | "rows"
    encoding: str | None  # codec name, e.g. "utf-8", "utf-8-sig", "utf-16", "cp1252"; None for rows
    delimiter: str | None
    columns: list[str]
    compressed: bool
    # The id column the input itself implies (PromptLoop's data_uuid), for when the caller has none.
    id_column: str | None = None
    # Rows stored by write_rows (None before): the ingest need not count them again.
    rows_written: int | None = None


@dataclass
class Report:
    valid: bool
    row_count: int
    columns: list[str]
    errors: list[dict]
    preview: list[dict]  # the first rows as {column: value}
    info: TableInfo


def _error(line: int | None, column: int | None, message: str) -> dict:
    return {"line": line, "column": column, "message": message}


class _Errors:
    """Collects problems: keeps the first MAX_ERRORS and counts the rest.

    The problem that stopped reading (a limit, broken bytes) is always kept, last, so a list
    full of bad rows still says why the rest of the file was not read.
    """

    __slots__ = ("items", "stop", "total")

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.stop: dict | None = None
        self.total = 0

    def add(self, line: int | None, column: int | None, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_ERRORS:
            self.items.append(_error(line, column, message))

    def extend(self, exc: InputError) -> None:
        for item in exc.errors:
            if len(self.items) >= MAX_ERRORS and self.stop is None and exc.total == 1:
                self.stop = item
            self.add(item["line"], item["column"], item["message"])
        self.total += exc.total - len(exc.errors)

    def as_list(self) -> list[dict]:
        if self.total <= MAX_ERRORS:
            return list(self.items)
        kept = MAX_ERRORS - (2 if self.stop else 1)
        more = self.total - kept - (1 if self.stop else 0)
        tail = [_error(None, None, f"… and {more:,} more problems.")]
        return [*self.items[:kept], *tail, *([self.stop] if self.stop else [])]

    def error(self) -> InputError:
        return InputError(self.as_list(), self.total)


def _quote(text: str, limit: int = 60) -> str:
    return f'"{text}"' if len(text) <= limit else f'"{text[: limit - 1]}…"'


def _column_list(columns: list[str]) -> str:
    shown = ", ".join(_quote(c, 40) for c in columns[:20])
    return shown + (f" and {len(columns) - 20} more" if len(columns) > 20 else "")


# --- Detection ---------------------------------------------------------------------------------


def _dialect(delimiter: str) -> dict[str, Any]:
    # strict: an unclosed quote at the end of the file is an error, not a last record that
    # silently swallows everything after it.
    return {"delimiter": delimiter, "quotechar": '"', "doublequote": True, "strict": True}


def _records(text: str, delimiter: str, limit: int) -> list[list[str]]:
    found: list[list[str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"')
    try:
        for record in reader:
            if record:
                found.append(record)
                if len(found) >= limit:
                    break
    except csv.Error:
        pass
    return found


def _detect_delimiter(text: str, complete: bool) -> str:
    """The delimiter that splits the header into the most consistent field counts."""
    scores: dict[str, float] = {}
    for delimiter in DELIMITERS:
        records = _records(text, delimiter, _SNIFF_RECORDS + 1)
        if not complete and len(records) > 1:
            records.pop()  # the sample may end inside it
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        scores[delimiter] = sum(len(r) == width for r in records) / len(records)
    if not scores:
        return ","  # one column (or nothing to go on)
    best = max(scores.values())
    tied = [d for d in DELIMITERS if scores.get(d) == best]
    if len(tied) > 1:
        try:
            sniffed = csv.Sniffer().sniff(text[:16384], delimiters="".join(tied)).delimiter
        except csv.Error:
            sniffed = None
        if sniffed in tied:
            return sniffed
    return tied[0]


def _jsonl_name(filename: str | None) -> bool:
    name = (filename or "").lower().removesuffix(".gz")
    return name.endswith(_JSONL_NAMES)


def _flatten(obj: dict) -> dict:
    """PromptLoop's `{"data_uuid": …, "inputs": [a, b]}` becomes data_uuid, input_1, input_2."""
    if len(obj) == 2 and obj.keys() == _PROMPTLOOP_KEYS and type(obj["inputs"]) is list:
        flat = {"data_uuid": obj["data_uuid"]}
        for n, value in enumerate(obj["inputs"], 1):
            flat[f"input_{n}"] = value
        return flat
    return obj


def _is_promptloop(obj: Any) -> bool:
    return type(obj) is dict and obj.keys() == _PROMPTLOOP_KEYS and type(obj["inputs"]) is list


def _header_problems(names: list[str], line: int) -> tuple[list[dict], list[dict]]:
    """(fatal, other) problems with a CSV header."""
    max_columns = settings.BATCHHUB_MAX_COLUMNS
    if not any(names):
        return [
            _error(
                line,
                None,
                f"Line {line} has no column names; "
                "the first line must be a header naming each column.",
            )
        ], []
    if all(_NUMBER.fullmatch(n) for n in names):
        return [
            _error(
                line,
                None,
                f"Line {line} looks like data, not a header: every value in it is a number. "
                "Add a first line with the column names.",
            )
        ], []
    if len(names) > max_columns:
        return [
            _error(
                line,
                max_columns + 1,
                f"The header has {len(names):,} columns; the limit is {max_columns:,}.",
            )
        ], []
    problems = []
    first_seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if not name:
            problems.append(
                _error(line, number, f"Column {number} in the header (line {line}) has no name.")
            )
        elif name in first_seen:
            problems.append(
                _error(
                    line,
                    number,
                    f"Column {number} in the header (line {line}) is named {_quote(name)} "
                    f"like column "
                    f"{first_seen[name]}; column names must be unique.",
                )
            )
        else:
            first_seen[name] = number
    return [], problems


def _inspect_rows(rows: Any) -> TableInfo:
    if not isinstance(rows, list):
        raise InputError([_error(None, None, "rows must be a list of objects.")])
    first = rows[0] if rows else None
    columns = list(_flatten(first)) if type(first) is dict else []
    return TableInfo(
        format="rows",
        encoding=None,
        delimiter=None,
        columns=columns,
        compressed=False,
        id_column="data_uuid" if _is_promptloop(first) else None,
    )


def _inspect_file(fileobj: BinaryIO, filename: str | None) -> tuple[TableInfo, list[dict]]:
    """TableInfo and the header's non-fatal problems; raises InputError for fatal ones."""
    pos = fileobj.tell()
    info = TableInfo(format="csv", encoding=None, delimiter=None, columns=[], compressed=False)
    try:
        info.compressed = is_gzip(fileobj)
        sample, complete = read_sample(fileobj, info.compressed)
        if sample.startswith(b"PK\x03\x04"):
            raise TextProblem(
                "This looks like an Excel workbook or a zip archive, not a CSV. "
                "Export it as CSV (UTF-8) and upload that."
            )
        info.encoding = detect_encoding(sample, complete)
        text = decode_sample(sample, info.encoding, complete)
        if "\x00" in text:
            at = text.index("\x00")
            line = text.count("\n", 0, at) + 1
            char = at - (text.rfind("\n", 0, at) + 1) + 1
            raise TextProblem(
                f"Line {line} contains a NUL byte (at character {char}): this is not a text "
                "file; upload a CSV or JSONL file.",
                line,
            )
        if not text.strip():
            raise TextProblem("The file is empty: it needs a header line and at least one row.")
        if not complete:
            # Detection only looks at whole lines: the sample may end in the middle of one.
            cut = max(text.rfind("\n"), text.rfind("\r"))
            if cut <= 0:
                raise TextProblem(
                    f"The first line is longer than {SAMPLE_BYTES // 1024} KB; "
                    "this does not look like a CSV or JSONL file.",
                    1,
                )
            text = text[: cut + 1]
        stripped = text.lstrip()
        if _jsonl_name(filename) or stripped.startswith("{"):
            info.format = "jsonl"
            _inspect_jsonl(text, info, strict=not _jsonl_name(filename))
            return info, []
        if stripped.startswith("[") and (filename or "").lower().removesuffix(".gz").endswith(
            ".json"
        ):
            raise TextProblem(
                "This is a JSON document, not JSONL: put one object per line (JSONL), "
                "or send the rows in the API's JSON body."
            )
        info.delimiter = _detect_delimiter(text, complete)
        return info, _inspect_csv(text, info)
    except TextProblem as problem:
        exc = InputError([_error(problem.line, None, problem.message)])
        exc.info = info
        raise exc from None
    except InputError as exc:
        exc.info = info
        raise
    finally:
        fileobj.seek(pos)


def _inspect_csv(text: str, info: TableInfo) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""), **_dialect(info.delimiter))
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if record:
                break
        else:
            raise TextProblem("The file is empty: it needs a header line and at least one row.")
    except csv.Error as exc:
        raise TextProblem(_csv_message(exc, last + 1), last + 1) from None
    names = [name.strip() for name in record]
    fatal, problems = _header_problems(names, start)
    if fatal:
        raise InputError(fatal)
    info.columns = names
    return problems


def _inspect_jsonl(text: str, info: TableInfo, *, strict: bool) -> None:
    for number, line in enumerate(io.StringIO(text, newline=""), 1):
        if not line.strip():
            continue
        try:
            obj = jsonsafe.loads(line)
        except jsonsafe.JSONLimitError:
            continue  # JSON, but out of bounds: the row scan reports it and where
        except ValueError:
            obj = None
        if type(obj) is dict:
            info.columns = list(_flatten(obj))
            info.id_column = "data_uuid" if _is_promptloop(obj) else None
            return
        if strict:
            raise TextProblem(
                f"Line {number} starts with {{ but is not a complete JSON object. "
                "A JSONL file has one "
                "object per line (a pretty-printed JSON document is not JSONL).",
                number,
            )
        return  # a .jsonl file: the row scan reports every bad line


def inspect(fileobj: BinaryIO, *, filename: str | None = None) -> TableInfo:
    """Detect format, compression, encoding, delimiter and columns from a sample of the file.

    Reads at most 64 KB (decompressed) and puts the file back where it was. Raises InputError
    for problems visible there: empty, not text, no usable header, undecodable start.
    """
    info, problems = _inspect_file(fileobj, filename)
    if problems:
        exc = InputError(problems)
        exc.info = info
        raise exc
    return info


# --- Reading rows ------------------------------------------------------------------------------


def _csv_message(exc: csv.Error, line: int) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return (
            f"Line {line} opens a quoted field that is never closed: the file ends inside quotes. "
            'Check for a missing closing " in this record.'
        )
    if "field larger than field limit" in text:
        limit = settings.BATCHHUB_MAX_FIELD_BYTES
        return f"Line {line} has a field longer than the limit of {limit:,} characters."
    if "expected after" in text:
        return (
            f'Line {line} has a quoted field followed by more text before the next delimiter; a " '
            'inside a quoted field must be doubled ("").'
        )
    return f"Line {line} could not be read as CSV ({text})."


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


def _read_failure(stream: TextStream, exc: Exception, last: int) -> InputError:
    """The InputError for an exception raised while reading records (after line `last`)."""
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, csv.Error):
        return InputError([_error(last + 1, None, _csv_message(exc, last + 1))])
    problem = stream.problem(exc, last)  # decoding, NUL bytes, broken gzip; re-raises others
    return InputError([_error(problem.line, None, problem.message)])


def _iter_csv(fileobj: BinaryIO, info: TableInfo) -> Iterator[tuple[int, list]]:
    stream, reader = _open_csv(fileobj, info)
    last = 0
    with stream:
        try:
            last = _skip_header(stream, reader)
            for record in reader:
                start = last + 1
                last = reader.line_num
                if record:  # blank lines are skipped
                    yield start, record
        except Exception as exc:
            raise _read_failure(stream, exc, last) from None


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
        return line, None, f"{what} {exc.phrase()}."
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
            problem = stream.problem(exc, number)
            _raise(problem.line, None, problem.message)


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


# --- Validation --------------------------------------------------------------------------------


class _Scan:
    """One pass over the rows: yields (line, ref, values) for good rows, records problems.

    ref is the row's id as a string, or None when there is no id column. Raises InputError only
    for a problem that stops reading (the caller merges it into the errors). The CSV loop is
    written out for speed: it runs per row at csv.reader's pace, so it holds no per-row call
    beyond the reader itself except on rows with a problem.
    """

    def __init__(
        self,
        source,
        info: TableInfo,
        errors: _Errors,
        *,
        id_column: str | None,
        max_rows: int,
        deadline: float | None = None,
    ):
        self.source = source
        self.deadline = deadline
        self.info = info
        self.errors = errors
        self.id_column = id_column
        self.max_rows = max_rows
        self.count = 0
        self.finished = False
        self.what = "Row" if info.format == "rows" else "Line"
        self.ref_max = _ref_max_length()

    def __iter__(self) -> Iterator[tuple[int, str | None, list]]:
        return self._csv() if self.info.format == "csv" else self._objects()

    # Problems, one method each so the loops stay short.

    def _too_many(self, line: int, count: int) -> None:
        self.errors.add(
            line,
            None,
            f"The file has more than {self.max_rows:,} rows, the limit; "
            f"line {line} is row {count:,}.",
        )

    def _too_many_blank(self, line: int) -> None:
        self.errors.add(
            line,
            None,
            f"The file has more than {self.max_rows:,} blank lines (line {line} is one); "
            "reading stopped there. This does not look like a table.",
        )

    def _ragged(self, line: int, got: int, width: int) -> None:
        self.errors.add(
            line,
            min(got, width) + 1,
            f"Line {line} has {got} fields, expected {width} (one per header column).",
        )

    def _bad_id(self, line: int, index: int | None, ref: str | None, duplicate: bool) -> None:
        column = index + 1 if index is not None else None
        name = _quote(self.id_column)
        if duplicate:
            message = (
                f"{self.what} {line} repeats the id {_quote(ref)} (column {name}); "
                "ids must be unique."
            )
        elif not ref:
            message = f"{self.what} {line} has no value in the id column {name}."
        else:
            message = f"{self.what} {line} has an id longer than {self.ref_max} characters."
        self.errors.add(line, column, message)

    def _csv(self) -> Iterator[tuple[int, str | None, list]]:
        columns = self.info.columns
        width, max_rows, ref_max = len(columns), self.max_rows, self.ref_max
        id_index = columns.index(self.id_column) if self.id_column in columns else None
        # Ids are kept as 64-bit hashes (SipHash, via hash()), not strings: a million long ids
        # would otherwise stay in memory for the whole pass.
        seen: set[int] = set()
        seen_add = seen.add
        count = last = blank = 0
        stream, reader = _open_csv(self.source, self.info, self.deadline)
        with stream:
            try:
                last = _skip_header(stream, reader)
                for record in reader:
                    start = last + 1
                    last = reader.line_num
                    if not record:
                        blank += 1
                        if blank > max_rows:
                            self._too_many_blank(start)
                            break
                        continue
                    count += 1
                    if count > max_rows:
                        self._too_many(start, count)
                        break
                    if len(record) != width:
                        self._ragged(start, len(record), width)
                        continue
                    if id_index is None:
                        yield start, None, record
                        continue
                    ref = record[id_index]
                    if not ref or len(ref) > ref_max:
                        self._bad_id(start, id_index, ref, False)
                        continue
                    size = len(seen)
                    seen_add(hash(ref))
                    if len(seen) == size:
                        self._bad_id(start, id_index, ref, True)
                        continue
                    yield start, ref, record
                self.finished = True
            except Exception as exc:
                raise _read_failure(stream, exc, last) from None
            finally:
                self.count = count

    def _objects(self) -> Iterator[tuple[int, str | None, list]]:
        columns, id_column = self.info.columns, self.id_column
        max_rows, ref_max = self.max_rows, self.ref_max
        id_index = columns.index(id_column) if id_column in columns else None
        seen: set[int] = set()
        count = 0
        try:
            for line, values in _iter_source(
                self.source, self.info, self.errors.add, self.deadline
            ):
                count += 1
                if count > max_rows:
                    self._too_many(line, count)
                    break
                if id_column is None:
                    yield line, None, values
                    continue
                if id_index is None and id_column in columns:
                    id_index = columns.index(id_column)  # the key may first appear now
                value = (
                    values[id_index] if id_index is not None and id_index < len(values) else None
                )
                ref = "" if value is None else value if type(value) is str else str(value)
                if not ref or len(ref) > ref_max:
                    self._bad_id(line, id_index, ref, False)
                    continue
                digest = hash(ref)
                if digest in seen:
                    self._bad_id(line, id_index, ref, True)
                    continue
                seen.add(digest)
                yield line, ref, values
            self.finished = True
        finally:
            self.count = count

    def check_not_empty(self) -> None:
        if not self.finished or self.count:
            return
        # Bad JSON lines are not rows: when every line was bad, those errors say enough.
        if self.info.format == "csv" or not self.errors.total:
            if self.info.format == "csv":
                self.errors.add(
                    2, None, "The file has a header but no data rows (line 2 onwards is empty)."
                )
            elif self.info.format == "jsonl":
                self.errors.add(
                    None, None, "The file has no rows: it needs at least one JSON object."
                )
            else:
                self.errors.add(None, None, "rows is empty: send at least one row object.")


def _ref_max_length() -> int:
    from .models import Row

    return Row._meta.get_field("ref").max_length


def _prepare(source, filename: str | None) -> tuple[TableInfo, list[dict]]:
    if isinstance(source, (list, tuple)):
        return _inspect_rows(list(source) if isinstance(source, tuple) else source), []
    return _inspect_file(source, filename)


def _check_header(
    info: TableInfo, errors: _Errors, id_column: str | None, required: Iterable[str]
) -> str | None:
    """Header-level checks for CSV; returns the id column to check rows against (None if absent)."""
    if info.format != "csv":
        return id_column
    if id_column and id_column not in info.columns:
        errors.add(
            1,
            None,
            f"The id column {_quote(id_column)} is not in the header "
            f"(the columns are {_column_list(info.columns)}).",
        )
        id_column = None
    for name in required:
        if name not in info.columns:
            errors.add(
                1,
                None,
                f"The processor needs a column {_quote(name)}, but the header has none "
                f"(the columns are {_column_list(info.columns)}).",
            )
    return id_column


def validate(
    source,
    *,
    filename: str | None = None,
    id_column: str | None = None,
    required_columns: Iterable[str] = (),
    max_rows: int | None = None,
    preview_rows: int = PREVIEW_ROWS,
) -> Report:
    """Check input in one streaming pass, without the database. Never raises for bad input.

    `source` is a binary file object or the list of row objects. `max_rows` defaults to
    BATCHHUB_MAX_ROWS; reading stops at the first row over it.
    """
    required_columns = list(required_columns)
    # Someone is waiting for this answer: reading stops at the deadline, whatever the input.
    deadline = time.monotonic() + settings.BATCHHUB_VALIDATE_SECONDS
    errors = _Errors()
    try:
        info, problems = _prepare(source, filename)
    except InputError as exc:
        info = exc.info or TableInfo(
            format="rows" if isinstance(source, (list, tuple)) else "csv",
            encoding=None,
            delimiter=None,
            columns=[],
            compressed=False,
        )
        return Report(False, 0, list(info.columns), exc.errors, [], info)
    for problem in problems:
        errors.add(problem["line"], problem["column"], problem["message"])
    id_column = id_column or info.id_column
    scan = _Scan(
        source,
        info,
        errors,
        id_column=_check_header(info, errors, id_column, required_columns),
        max_rows=settings.BATCHHUB_MAX_ROWS if max_rows is None else max_rows,
        deadline=deadline,
    )
    rows = iter(scan)
    kept: list[list] = []
    try:
        kept = [values for _line, _ref, values in itertools.islice(rows, preview_rows)]
        collections.deque(rows, maxlen=0)  # the rest of the pass, at C speed
    except InputError as exc:
        errors.extend(exc)
    scan.check_not_empty()
    if info.format != "csv" and scan.finished:
        for name in required_columns:
            if name not in info.columns:
                errors.add(
                    None,
                    None,
                    f"The processor needs a column {_quote(name)}, but no row has it "
                    f"(the columns are {_column_list(info.columns)}).",
                )
    columns = info.columns
    preview = [{c: (v[i] if i < len(v) else None) for i, c in enumerate(columns)} for v in kept]
    return Report(
        valid=errors.total == 0,
        row_count=scan.count,
        columns=list(columns),
        errors=errors.as_list(),
        preview=preview,
        info=info,
    )


# --- Writing -----------------------------------------------------------------------------------


def write_rows(
    job,
    source,
    *,
    filename: str | None = None,
    skip: int = 0,
    each_batch: Callable[[], None] | None = None,
) -> TableInfo:
    """Stream the input's rows into jobs.Row for `job` (already saved), re-checking as it goes.

    index is the 0-based input order, ref the id column's value (job.id_column, else the one the
    input implies) or the 1-based row number. Raises InputError with every problem found (and
    writes no row after the first): call it inside a transaction so the caller can roll back.
    Returns the TableInfo with the final columns and rows_written (all of the input's rows);
    the caller updates the job from it.

    On SQLite the rows are committed in batches (ingest_db.insert_rows, which calls
    `each_batch`): the caller deletes them if this raises. `skip` leaves out the first rows,
    which an earlier attempt wrote (every row is still read and checked).
    """
    from .ingest_db import insert_rows

    info, problems = _prepare(source, filename)
    errors = _Errors()
    for problem in problems:
        errors.add(problem["line"], problem["column"], problem["message"])
    id_column = _check_header(info, errors, job.id_column or info.id_column, ())
    scan = _Scan(source, info, errors, id_column=id_column, max_rows=settings.BATCHHUB_MAX_ROWS)

    def rows() -> Iterator[tuple[int, str, list]]:
        index = 0
        try:
            for _line, ref, values in scan:
                if errors.total:
                    continue  # keep reading to report every problem, but write nothing more
                if index >= skip:
                    yield index, ref if ref is not None else str(index + 1), values
                index += 1
        except InputError as exc:
            errors.extend(exc)
        scan.check_not_empty()
        if errors.total:
            # Raised from inside the writer's loop, so a COPY in progress is aborted, not completed.
            raise errors.error()

    info.rows_written = skip + insert_rows(job, rows(), each_batch=each_batch)
    return info
