"""Try a processor on the first few rows, synchronously, before a whole job starts.

``POST /api/v1/jobs/validate`` with ``"sample": 10`` and the new-job page's "Try on the first 10
rows" call ``run_sample``. It runs in the web process, so it is bounded: at most ``limit`` rows,
I/O processors run their rows concurrently, and the whole call returns within about ``timeout``
seconds, whatever the outside service does. Nothing is written to the database.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from . import credentials
from .ingest.validation import missing_column_message
from .processors import calls
from .processors.base import (
    ParamsError,
    Processor,
    ProcessorContext,
    RowInput,
    RowResult,
    get_processor_class,
)

MAX_SAMPLE_ROWS = 50


def run_sample(
    processor_name: str,
    params: dict,
    rows: list[dict],
    *,
    column_map: dict | None = None,
    owner_id: int | None = None,
    limit: int = 10,
    timeout: float = 20.0,
    columns: list[str] | None = None,
) -> list[dict]:
    """Process up to ``limit`` rows and return, for each,
    ``{"row": n (1-based), "input": {...}, "output": {...}|None, "error": str|None}``.

    Raises ParamsError for an unknown processor, params that do not fit its schema, a saved
    credential the owner has not got, or a column it reads that `columns` (the file's header)
    lacks: the same errors creating the job would give, rather than rows that quietly fail or
    miss a value. A row the job would retry (timeout, 429, 5xx) comes back with its error and
    "(the job would retry this row)".
    """
    cls = get_processor_class(processor_name)
    if cls is None:
        raise ParamsError(
            f"Unknown processor {processor_name!r}.",
            [{"param": "processor", "message": f"unknown processor {processor_name!r}"}],
        )
    column_map = dict(column_map or {})
    sample = list(rows[: max(0, min(limit, MAX_SAMPLE_ROWS))])
    deadline = time.monotonic() + timeout
    concurrency = max(1, len(sample))
    processor = cls(
        params, context=ProcessorContext(owner_id=owner_id, job_id=None, concurrency=concurrency)
    )
    # A credential the owner has not got: the error Start would give, not ten failed rows.
    problems = credentials.unusable(owner_id, processor.credential_refs())
    if problems:
        processor.close()
        first = problems[0]
        raise ParamsError(f"params.{first['param']}: {first['message']}", problems)
    if columns is not None:
        for name in processor.required_columns(column_map):
            if name not in columns:
                processor.close()
                message = missing_column_message(name, columns)
                raise ParamsError(message, [{"param": "", "message": message}])
    inputs = [_row_input(cls, index, row, column_map) for index, row in enumerate(sample)]
    results: list[RowResult | None] = [None] * len(inputs)
    try:
        runnable = [(i, row) for i, row in enumerate(inputs) if not isinstance(row, RowResult)]
        for i, row in enumerate(inputs):
            if isinstance(row, RowResult):
                results[i] = row
        if cls.io_bound:
            _run_concurrently(processor, runnable, results, deadline, concurrency)
        elif runnable:
            for (i, _), result in zip(
                runnable, calls.process(processor, [row for _, row in runnable]), strict=True
            ):
                results[i] = result
    finally:
        # Closing the client also cuts short the requests still running after the deadline.
        processor.close()
    return [
        _describe(index, row, result, timeout)
        for index, (row, result) in enumerate(zip(sample, results, strict=True))
    ]


def _row_input(
    cls: type[Processor], index: int, row: dict, column_map: dict
) -> RowInput | RowResult:
    missing = [
        column_map.get(name, name) for name in cls.inputs if column_map.get(name, name) not in row
    ]
    if missing:
        return RowResult(error=f"The input has no column {missing[0]!r}.")
    return RowInput(
        index=index,
        ref=str(index + 1),
        values=dict(row),
        inputs={name: row.get(column_map.get(name, name)) for name in cls.inputs},
    )


def _run_concurrently(
    processor: Processor,
    runnable: list[tuple[int, RowInput]],
    results: list[RowResult | None],
    deadline: float,
    concurrency: int,
) -> None:
    if not runnable:
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="batchhub-sample")
    try:
        futures = {pool.submit(calls.run_one, processor, row): i for i, row in runnable}
        done, _pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for future in done:
            results[futures[future]] = future.result()
    finally:
        # Do not wait for stragglers: the caller is a web request with a time budget.
        pool.shutdown(wait=False, cancel_futures=True)


def _describe(index: int, row: dict, result: RowResult | None, timeout: float) -> dict:
    entry: dict[str, Any] = {
        "row": index + 1,
        "input": row,
        "output": None,
        "error": None,
    }
    if result is not None:
        result = result.checked()
    if result is None:
        entry["error"] = f"Did not finish within the sample's {timeout:g} s."
    elif result.error is not None:
        entry["error"] = result.error + (" (the job would retry this row)" if result.retry else "")
    else:
        entry["output"] = result.output
        if result.usage:
            entry["usage"] = dict(result.usage)  # e.g. an LLM's tokens: the page's estimate
    return entry
