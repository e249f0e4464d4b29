"""Detect an input's format (CSV dialect, JSONL, the API's rows) and its header; the problem list.

Every problem becomes `{"line", "column", "message"}` (jobs/ingest/__init__.py says how lines and
columns are numbered).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.conf import settings

from batchhub import jsonsafe
from batchhub.jsonstream import JSONLines

from .fields import problem_field
from .text import (
    SAMPLE_BYTES,
    Stop,
    TextProblem,
    decode_sample,
    detect_encoding,
    is_gzip,
    read_sample,
)

MAX_ERRORS = 100
PREVIEW_ROWS = 10
DELIMITERS = (",", "\t", ";", "|")  # also the order of preference when the sample can't decide
_SNIFF_RECORDS = 100
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")
_PROMPTLOOP_KEYS = frozenset({"data_uuid", "inputs"})
_JSONL_NAMES = (".jsonl", ".ndjson")


class InputError(Exception):
    """The input cannot become a job. `errors` holds at most MAX_ERRORS problems, `total` all;
    `stop` says which bound ended the reading, when one did."""

    def __init__(self, errors: list[dict], total: int | None = None, stop: Stop | None = None):
        self.errors = list(errors)[:MAX_ERRORS]
        self.total = max(total or 0, len(errors))
        self.info: TableInfo | None = None
        self.stop = stop
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
    # CSV header cells with no name after the last named one (a spreadsheet's export ending
    # every line with a delimiter): left out of `columns`; a row may only leave them empty.
    unnamed_tail: int = 0


@dataclass
class Report:
    valid: bool
    row_count: int
    columns: list[str]
    errors: list[dict]
    preview: list[dict]  # the first rows as {column: value}
    info: TableInfo
    # The bound that ended the reading before the input's end (its problem is in `errors` too).
    stopped_by: Stop | None = None


def _error(line: int | None, column: int | None, message: str) -> dict:
    return {"line": line, "column": column, "message": message}


class _Errors:
    """Collects problems: keeps the first MAX_ERRORS and counts the rest.

    The problem that stopped reading (a limit, broken bytes) is always kept, last, so a list
    full of bad rows still says why the rest of the file was not read.
    """

    __slots__ = ("items", "stop", "stopped_by", "total")

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.stop: dict | None = None
        self.stopped_by: Stop | None = None
        self.total = 0

    def add(self, line: int | None, column: int | None, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_ERRORS:
            self.items.append(_error(line, column, message))

    def extend(self, exc: InputError) -> None:
        self.stopped_by = exc.stop or self.stopped_by
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


def _field_at(text: str, complete: bool) -> int | None:
    """The CSV column (field number) of the sample's first NUL."""
    delimiter = _detect_delimiter(text.replace("\x00", ""), complete)
    lines = io.StringIO(text, newline="")
    return problem_field(lines, delimiter, settings.BATCHHUB_MAX_FIELD_BYTES, bad_char_only=True)


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
    if isinstance(rows, JSONLines):
        first = rows.first
    elif not isinstance(rows, list):
        raise InputError([_error(None, None, "rows must be a list of objects.")])
    else:
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
            problem = TextProblem(
                f"Line {line} contains a NUL byte (at character {char}): this is not a text "
                "file; upload a CSV or JSONL file.",
                line,
            )
            if not (_jsonl_name(filename) or text.lstrip().startswith("{")):
                problem.column = _field_at(text, complete)
            raise problem
        if not text.strip():
            raise TextProblem("The file is empty: it needs a header line and at least one row.")
        jsonl = _jsonl_name(filename) or text.lstrip().startswith("{")
        if not complete:
            # Detection only looks at whole lines: the sample may end in the middle of one.
            cut = max(text.rfind("\n"), text.rfind("\r"))
            if cut <= 0 and jsonl:
                # A JSONL row longer than the sample: the row scan learns the columns from it
                # and holds it to the limits every other line meets.
                info.format = "jsonl"
                if info.encoding not in _JSON_ENCODINGS:
                    decode_sample(sample, "utf-8", complete)
                return info, []
            if cut <= 0:
                raise TextProblem(
                    f"The first line is longer than {SAMPLE_BYTES // 1024} KB; "
                    "this does not look like a CSV or JSONL file.",
                    1,
                )
            text = text[: cut + 1]
        stripped = text.lstrip()
        if jsonl:
            info.format = "jsonl"
            if info.encoding not in _JSON_ENCODINGS:
                # JSON is UTF-8 (UTF-16 or 32 with a BOM): a legacy guess turned bytes that are
                # no text into other characters ("\xff" read as "ÿ"). Name the first one.
                decode_sample(sample, "utf-8", complete)
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
        exc = InputError([_error(problem.line, getattr(problem, "column", None), problem.message)])
        exc.info = info
        raise exc from None
    except InputError as exc:
        exc.info = info
        raise
    finally:
        fileobj.seek(pos)


_JSON_ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-32")
_BOM = "\ufeff"


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
    # A byte-order mark inside the header (a second one at the start, or files joined after
    # their first line) is invisible: kept, "a" looked present and was not.
    names = [name.strip().strip(_BOM).strip() for name in record]
    named = len(names)
    while named and not names[named - 1]:
        named -= 1
    if named:  # a header with no name at all is refused below as such
        info.unnamed_tail = len(names) - named
        names = names[:named]
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
