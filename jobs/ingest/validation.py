"""Validate an input in one streaming pass (no database): every problem, a count and a preview."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterable, Iterator

from django.conf import settings

from batchhub.jsonstream import JSONLines

from ..models import Row
from .detect import (
    PREVIEW_ROWS,
    InputError,
    Report,
    TableInfo,
    _column_list,
    _Errors,
    _inspect_file,
    _inspect_rows,
    _quote,
)
from .read import _iter_source, csv_records


class _Scan:
    """One pass over the rows: yields (line, ref, values) for good rows, records problems.

    ref is the row's id as a string, or None when there is no id column. Raises InputError only
    for a problem that stops reading (the caller merges it into the errors). The CSV loop is
    written out for speed: it runs per row at csv.reader's pace, so it holds no per-row call
    beyond the records themselves (read.csv_records) except on rows with a problem.
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
        tail = self.info.unnamed_tail
        expected = (
            f"{width} to {width + tail} (one per header column, the unnamed last ones empty)"
            if tail
            else f"{width} (one per header column)"
        )
        self.errors.add(
            line,
            min(got, width + tail) + 1,
            f"Line {line} has {got} fields, expected {expected}.",
        )

    def _without_unnamed_tail(self, line: int, record: list[str], width: int) -> list[str] | None:
        """A record that differs from the header's width: without its cells under the header's
        unnamed trailing columns when those are empty; else None, its problem recorded."""
        if not width < len(record) <= width + self.info.unnamed_tail:
            self._ragged(line, len(record), width)
            return None
        for number in range(width + 1, len(record) + 1):
            if record[number - 1]:
                self.errors.add(
                    line,
                    number,
                    f"Line {line} has a value in column {number}, which has no name in the "
                    "header; name the column or leave it empty.",
                )
                return None
        return record[:width]

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
        count = blank = 0
        records = csv_records(self.source, self.info, self.deadline)
        try:
            for start, record in records:
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
                    record = self._without_unnamed_tail(start, record, width)
                    if record is None:
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
        finally:
            records.close()  # stopped early: the file's stream is closed now, not when collected
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
    return Row._meta.get_field("ref").max_length


def _prepare(source, filename: str | None) -> tuple[TableInfo, list[dict]]:
    if isinstance(source, JSONLines):
        return _inspect_rows(source), []
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
            errors.add(1, None, missing_column_message(name, info.columns))
    return id_column


def missing_column_message(name: str, columns: list[str]) -> str:
    """What a job whose processor reads a column the header lacks is refused with (the sample
    run of the new-job page says the same)."""
    return (
        f"The processor needs a column {_quote(name)}, but the header has none "
        f"(the columns are {_column_list(columns)})."
    )


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
            format="rows" if isinstance(source, (list, tuple, JSONLines)) else "csv",
            encoding=None,
            delimiter=None,
            columns=[],
            compressed=False,
        )
        return Report(False, 0, list(info.columns), exc.errors, [], info, exc.stop)
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
        stopped_by=errors.stopped_by,
    )
