"""SQLite, the embedded default: every statement the engine runs on the row table uses the
(job, index) index, and no write transaction of a job grows with the job's size.

The statements are not listed by hand: they are recorded while real jobs run through ingest,
processing, pause, resume, cancel, retry, results and row pages, then each is explained with
its own parameters (`EXPLAIN QUERY PLAN`).
"""

from __future__ import annotations

import gc
import re
import time
from contextlib import contextmanager

import pytest
from django.db import connection

import batchhub.celery
from jobs import chunk_loop, results, runner, services, syncpoint
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus, Row
from jobs.processors import base
from tests.conftest import drive, make_job, rows_text
from tests.jobs.test_engine import FlakyProcessor

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query planner"),
]

ROW_TABLE = Row._meta.db_table
CHUNK_TABLE = Chunk._meta.db_table
JOB_TABLE = Job._meta.db_table


@contextmanager
def recorded_statements(table: str = ROW_TABLE):
    """(sql, params) of every statement run on `table` inside the block."""
    seen: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):
        if table in sql and not sql.lstrip().upper().startswith(("INSERT", "EXPLAIN")):
            first = next(iter(params), None) if many else params
            seen.append((sql, first))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


def plan(sql: str, params) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [row[-1] for row in cursor.fetchall()]


def uses_index_on_row_table(sql: str, details: list[str], *, by_index: bool) -> bool:
    names = {ROW_TABLE, *re.findall(rf'"{ROW_TABLE}" "?(\w+)"?', sql)}  # its aliases too
    row_lines = [d for d in details if set(re.findall(r"\w+", d)) & names]
    if not row_lines or any(d.startswith("SCAN") for d in row_lines):
        return False
    if by_index:
        # Narrowed by the row's index (a value, a range or a list), not only by the job.
        return all(re.search(r'\(job_id=\? AND "?index"?\s*[=<>]', d) for d in row_lines)
    return all(re.search(r"USING (COVERING )?INDEX \S+ \(job_id=\?", d) for d in row_lines)


@pytest.fixture
def flaky(monkeypatch):
    FlakyProcessor.seen = {}
    monkeypatch.setitem(base.registry(), "flaky", FlakyProcessor)


def test_every_row_statement_of_the_engine_uses_the_job_index_index(alice, settings, flaky):
    settings.BATCHHUB_CHUNK_ROWS = 100
    with (
        recorded_statements() as hot,
        recorded_statements(CHUNK_TABLE) as chunks,
        recorded_statements(JOB_TABLE) as jobs,
    ):
        # Processing: claim, fetch, write outputs, mark running, counters, release.
        job = drive(make_job(alice, rows_text(400), processor="flaky", concurrency=2))
        paused = make_job(alice, rows_text(300), concurrency=1)
        loading.ingest(paused.pk)
        runner.work_once(paused.pk)
        paused = services.pause(Job.objects.get(pk=paused.pk), actor="alice")
        drive(services.resume(paused, actor="alice"))
    assert job.status == JobStatus.PARTIAL
    # The claim and the lease, the job's counters and status: by index too, never a scan.
    explained = [(sql, plan(sql, params)) for sql, params in chunks + jobs]
    scans = [(sql, details) for sql, details in explained if any("SCAN" in d for d in details)]
    assert chunks and jobs and not scans, scans
    with recorded_statements() as whole_job:
        # Once per job or per request: these read or change the job's rows as a whole.
        cancelled = make_job(alice, rows_text(300), concurrency=1)
        loading.ingest(cancelled.pk)
        runner.work_once(cancelled.pk)
        services.cancel(Job.objects.get(pk=cancelled.pk), actor="alice")
        runner.work_once(cancelled.pk)
        for fmt in ("csv", "jsonl"):
            for status in ("all", "failed"):
                b"".join(results.stream(job, fmt, status))
        retried = services.retry(job, actor="alice")
    assert retried.status == JobStatus.PROCESSING

    assert hot and whole_job
    bad = []
    for sql, params in hot:
        details = plan(sql, params)
        # Once per job, not per sync point: the ingest clearing a retried ingest's rows, its
        # resume point (one seek to the job's last index) and finalize's recount.
        by_index = not re.search(r"GROUP BY|^DELETE|^SELECT MAX\(", sql.strip().upper())
        if not uses_index_on_row_table(sql, details, by_index=by_index):
            bad.append((sql, details))
    for sql, params in whole_job:
        details = plan(sql, params)
        if not uses_index_on_row_table(sql, details, by_index=False):
            bad.append((sql, details))
    assert not bad, "\n\n".join(f"{sql}\n  -> {details}" for sql, details in bad)


def test_the_output_write_is_one_index_lookup_a_row(alice):
    job = make_job(alice, rows_text(50))
    loading.ingest(job.pk)
    done = [syncpoint.Done(i, "succeeded", {"text": "x"}, None, 1) for i in range(10, 20)]
    with recorded_statements() as seen:
        syncpoint.write_rows(job.pk, done)
    assert len(seen) == 1
    sql, params = seen[0]
    [only] = plan(sql, params)
    assert re.fullmatch(rf"SEARCH {ROW_TABLE} USING INDEX \w+ \(job_id=\? AND index=\?\)", only)
    assert list(
        Row.objects.filter(job=job, status="succeeded").values_list("index", flat=True)
    ) == list(range(10, 20))


# --- how long the engine holds the write lock ---------------------------------------------------


@contextmanager
def settled_collector():
    """The collector as a worker process has it (batchhub/celery.py): what the process held
    before frozen. A test process holds every earlier test's objects, and a full collection of
    those (200–300 ms of CPU in a whole-suite run) landing inside a transaction would be counted
    as the engine holding the lock."""
    thresholds = gc.get_threshold()
    gc.collect()
    batchhub.celery.settle_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@contextmanager
def write_transactions(conn):
    """(CPU seconds, statements) of every write transaction on `conn`: BEGIN … COMMIT/ROLLBACK,
    and each statement that writes outside a transaction (its own implicit one).

    The time is this thread's CPU time (SQLite runs in the caller's thread, and the test's
    database is in memory): the work done while holding the lock, which on a machine shared
    with other tests would otherwise be measured with however long the thread waited for a core.
    """
    durations: list[tuple[float, list[str]]] = []
    began: list[float] = []
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        head = sql.lstrip()[:6].upper()
        if head.startswith("BEGIN"):
            began.append(time.thread_time())
            statements.clear()
            return execute(sql, params, many, context)
        if not conn.in_atomic_block and head in ("UPDATE", "INSERT", "DELETE"):
            start = time.thread_time()
            try:
                return execute(sql, params, many, context)
            finally:
                durations.append((time.thread_time() - start, [sql[:80]]))
        statements.append(f"{sql[:80]} ({len(params) if many else 1}x)")
        return execute(sql, params, many, context)

    real_commit, real_rollback = conn._commit, conn._rollback

    def end(real):
        def ended():
            try:
                return real()
            finally:
                if began:
                    durations.append((time.thread_time() - began.pop(), list(statements)))

        return ended

    conn._commit, conn._rollback = end(real_commit), end(real_rollback)
    try:
        with conn.execute_wrapper(record):
            yield durations
    finally:
        conn._commit, conn._rollback = real_commit, real_rollback


@pytest.mark.django_db(transaction=True)
def test_write_transactions_of_a_large_job_stay_short(alice, settings):
    # Each sync point writes one CPU group (at most chunk_loop.SQLITE_GROUP_MAX rows) and commits,
    # so the slowest write transaction does not grow with the job and stays far under the 200 ms
    # that a web request could be kept waiting for the lock.
    settings.BATCHHUB_CHUNK_ROWS = 5000
    job = make_job(alice, rows_text(60_000), concurrency=2)
    loading.ingest(job.pk)
    with settled_collector(), write_transactions(connection) as transactions:
        finished = drive(job)
    assert finished.status == JobStatus.COMPLETED and finished.succeeded == finished.total
    assert len(transactions) > 12
    longest = max(transactions)
    finalizing = [cpu for cpu, queries in transactions if any("GROUP BY" in q for q in queries)]
    print(f"\nlongest {longest[0] * 1000:.1f} ms: {longest[1][:3]}; finalize {finalizing}")
    # Sync points ~10 ms; finalize counts the rows before its transaction, not in it.
    assert longest[0] < 0.2, longest
    assert not finalizing, finalizing
    syncs = [cpu for cpu, queries in transactions if any("SET status = %s" in q for q in queries)]
    assert max(syncs) < 0.1, max(syncs)
    written = [
        int(m.group(1))
        for _cpu, statements in transactions
        for statement in statements
        if (m := re.search(rf"^UPDATE {ROW_TABLE} SET status.*\((\d+)x\)$", statement))
    ]
    assert sum(written) == 60_000 and max(written) <= chunk_loop.SQLITE_GROUP_MAX
