"""The sync point: one transaction that writes a chunk's finished rows, bumps the job's counters,
marks the next rows running, renews the lease and reads the job's status."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg import Cursor as PgCursor

from batchhub import jsonsafe

from . import livestatus, reasons, states, steps
from .chunks import Plan
from .models import Chunk, Job, JobStatus, Row, RowStatus
from .processors import Processor, RowResult

logger = logging.getLogger(__name__)

# Rows per sync point for CPU processors: the first group is small, later ones are sized from the
# measured time per row so that a group takes about GROUP_SECONDS (pause stays well under a second)
# and cheap processors commit thousands of rows per statement.
CPU_GROUP_ROWS = 100
SAMPLE_EVERY = 1.0  # seconds between throughput samples
# Added to twice a processor's timeout for the longest a request left in flight at a cancel may
# still take (its thread then writes its row: ChunkRun.write_late).
MAX_LATE_MARGIN = 30.0
MAX_SAMPLES = 240


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, or what the service asked for."""
    if retry_after is not None and retry_after >= 0:
        return min(float(retry_after), 3600.0)
    ceiling = min(300.0, 2.0 * 2 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(slots=True)
class Done:
    """A finished row on its way to the database."""

    index: int
    status: str
    output: dict[str, Any] | None
    error: str | None
    attempts: int
    # Why it failed, as the processor named it; write_rows derives it from the error if not.
    reason: str | None = None


def write_rows(job_pk: int, done: list[Done]) -> None:
    """One UPDATE for many rows, with all their values passed as one JSON document.

    Never a statement per row, and never a parameter per value either: thousands of placeholders
    cost more to bind and parse than the update itself.
    """
    if not done:
        return
    table = Row._meta.db_table
    if connection.vendor == "postgresql":
        if _succeeded_run(done):
            joined, params = _succeeded_run_update(table, done)
            first, last = done[0].index, done[-1].index
        else:
            joined, params = _batch_update(table, done)
            first, last = min(d.index for d in done), max(d.index for d in done)
        connection.ensure_connection()
        # Django's error classes, as its own cursors raise them: the loop tells a lost database
        # (OperationalError) from a refused row (DataError) by them.
        with connection.wrap_database_errors, PgCursor(connection.connection) as cursor:
            cursor.execute(
                f'{joined} WHERE r.job_id = %s AND r."index" = v.i '
                # The range keeps the plan on the few index entries of these rows even when the
                # planner's statistics think the job is tiny (they lag behind a fresh ingest).
                f'AND r."index" BETWEEN %s AND %s',
                [*params, job_pk, first, last],
            )
        return
    # SQLite: one prepared UPDATE run for each row (executemany, in C), each a lookup in the
    # unique (job, index) index. A join against the batch (UPDATE … FROM json_each) was planned
    # as a search of the job's rows for every batch row: rows-in-job × rows-in-batch a sync.
    values = [
        (
            d.status,
            None if d.output is None else _dumps(d.output),
            None if d.error is None else jsonsafe.valid_text(d.error),
            _reason(d),
            d.attempts,
            job_pk,
            d.index,
        )
        for d in done
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET status = %s, output = %s, error = %s, reason = %s, "
            f'attempts = %s WHERE job_id = %s AND "index" = %s',
            values,
        )


def _reason(d: Done) -> str | None:
    """A failed row's reason (jobs/reasons.py); none for any other row."""
    if d.status != RowStatus.FAILED or d.error is None:
        return None
    reason = reasons.clip(d.reason) if d.reason else reasons.reason_for(d.error)
    return jsonsafe.valid_text(reason)


_COUNTERS = ("running", "succeeded", "failed", "pending", "cancelled")


def _count_finished(job: Job, finished: list[Done]) -> None:
    """Move the job's counters for rows that were running and ended as `finished` says (a row
    given back is pending again)."""
    for d in finished:
        job.running -= 1
        if d.status == RowStatus.SUCCEEDED:
            job.succeeded += 1
        elif d.status == RowStatus.FAILED:
            job.failed += 1
        elif d.status == RowStatus.CANCELLED:
            job.cancelled += 1
        else:
            job.pending += 1


def _add_usage(job: Job, usage: dict[str, int]) -> bool:
    """Add a processor's usage (tokens, …) to the job's; whether there was any."""
    if not usage:
        return False
    total = dict(job.usage or {})
    for key, value in usage.items():
        total[key] = total.get(key, 0) + value
    job.usage = total
    return True


class OutputNotJSON(ValueError):
    """A row's output that cannot be written as JSON at all (an integer too long to write, a key
    of a type JSON has none for, a value nested past the interpreter's recursion)."""


def _dumps(value: Any) -> str:
    try:
        return jsonsafe.dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise OutputNotJSON(str(exc) or type(exc).__name__) from exc


def refused_for_content(exc: BaseException) -> bool:
    """Whether a write failed for what the rows hold, the database being there: a value it cannot
    store (DataError; on SQLite a JSON check, IntegrityError) or an output that is not JSON.
    A lost database (OperationalError, InterfaceError) is not, save PostgreSQL's "program limit
    exceeded" (a jsonb value or a batch past jsonb's size limits), raised as one."""
    if isinstance(exc, (DataError, IntegrityError, OutputNotJSON)):
        return True
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
    return isinstance(exc, OperationalError) and sqlstate.startswith("54")


def refusal_message(exc: BaseException) -> str:
    """The error a refused row fails with: what the database (or the JSON writer) said."""
    if isinstance(exc, OutputNotJSON):
        return f"This row's output cannot be stored: it cannot be written as JSON ({exc})."[:500]
    diag = getattr(exc.__cause__, "diag", None)
    reason = getattr(diag, "message_primary", None)
    if reason:
        detail = getattr(diag, "message_detail", None)
        reason = f"{reason} ({detail})" if detail else reason
    else:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"The database refused this row's output: {reason}"[:500]


def write_each(job_pk: int, done: list[Done]) -> list[Done]:
    """The rows one at a time, each in a savepoint: those the database refuses for their content
    fail instead, saying why (their Done changed to match). Returns the refused.

    Only after a batch was refused: a statement a row is what write_rows avoids."""
    refused: list[Done] = []
    for d in done:
        try:
            with transaction.atomic():
                write_rows(job_pk, [d])
        except Exception as exc:
            if not refused_for_content(exc):
                raise
            d.status, d.output, d.error = RowStatus.FAILED, None, refusal_message(exc)
            d.reason = None  # derived from the refusal's words
            refused.append(d)
    write_rows(job_pk, refused)
    return refused


REFUSED_ROWS_NAMED = 10


def refused_event_message(refused: list[Done]) -> str:
    """The timeline's line for one sync point's refused rows: how many, which, and why the first
    failed (each row's own error says why it did)."""
    first = refused[0]
    if len(refused) == 1:
        return f"Row {first.index + 1} failed because its output could not be stored: {first.error}"
    numbers = ", ".join(str(d.index + 1) for d in refused[:REFUSED_ROWS_NAMED])
    more = len(refused) - REFUSED_ROWS_NAMED
    named = numbers + (f" and {more:,} more" if more > 0 else "")
    return (
        f"{len(refused):,} rows failed because their output could not be stored (rows {named}). "
        f"Row {first.index + 1}: {first.error}"
    )


def _refused_data(refused: list[Done]) -> dict[str, Any]:
    return {"rows": len(refused), "first": [d.index + 1 for d in refused[:REFUSED_ROWS_NAMED]]}


class _Refused(Exception):
    """A sync point's batch of rows was refused for a row's content: its transaction is rolled
    back and done again with the rows written one at a time."""


def _batch_update(table: str, done: list[Done]) -> tuple[str, list[Any]]:
    """Any batch: one JSON document, each row a positional array [index, status, output, error,
    attempts, reason]. orjson writes it without repeating keys, PostgreSQL parses it once into
    jsonb and each output is taken from it as it is (json_to_recordset would parse every output's
    text a second time). A null output stays SQL NULL."""
    batch = _dumps([[d.index, d.status, d.output, d.error, d.attempts, _reason(d)] for d in done])
    return (
        f"UPDATE {table} AS r SET status = v.x->>1, "
        f"output = NULLIF(v.x->2, 'null'::jsonb), error = v.x->>3, attempts = (v.x->>4)::int, "
        f"reason = v.x->>5 "
        f"FROM (SELECT x, (x->>0)::int AS i FROM jsonb_array_elements(%s::jsonb) AS x) AS v",
        [batch],
    )


def _succeeded_run(done: list[Done]) -> bool:
    """Whether `done` is a run of consecutive rows, in order, all succeeded at the same attempt:
    what a CPU group finishes as, nearly always."""
    first = done[0]
    index, attempts = first.index, first.attempts
    succeeded = RowStatus.SUCCEEDED
    for offset, d in enumerate(done):
        if (
            d.status != succeeded
            or d.index != index + offset
            or d.attempts != attempts
            or d.error is not None
            or d.output is None
        ):
            return False
    return True


def _succeeded_run_update(table: str, done: list[Done]) -> tuple[str, list[Any]]:
    """A succeeded run: the outputs alone, as one JSON array, a row's index being the first one
    plus its position. PostgreSQL then only unpacks the array instead of taking five values out
    of each row's array, which cost half as much again as rewriting the row
    (docs/performance.md)."""
    return (
        f"UPDATE {table} AS r SET status = %s, output = v.o, error = NULL, reason = NULL, "
        f"attempts = %s "
        f"FROM (SELECT o, %s + n::int - 1 AS i "
        f"FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS a(o, n)) AS v",
        [
            RowStatus.SUCCEEDED,
            done[0].attempts,
            done[0].index,
            _dumps([d.output for d in done]),
        ],
    )


def mark_running(job_pk: int, items: list[_Item]) -> None:
    """attempts + 1 and status running for rows about to start, in one short statement."""
    indexes = [i.index for i in items]
    rows = Row.objects.filter(job_id=job_pk, status__in=(RowStatus.PENDING, RowStatus.RUNNING))
    first, last = min(indexes), max(indexes)
    if last - first + 1 == len(indexes):
        # The usual case: a run of consecutive rows, named by its bounds.
        rows = rows.filter(index__gte=first, index__lte=last)
    elif connection.vendor == "postgresql":
        rows = rows.extra(where=['"index" = ANY(%s)'], params=[indexes])
    else:
        rows = rows.filter(index__in=indexes)
    rows.update(status=RowStatus.RUNNING, attempts=F("attempts") + 1)


@dataclass
class ChunkRun:
    job: Job
    chunk: Chunk
    processor: Processor
    plan: Plan
    finished: list[Done] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    succeeded_any: bool = False
    retry_after: float | None = None
    next_available: datetime | None = None
    # Rows given back for another try since the last sync point: the last one's reason, and
    # the soonest next try among them (the job row shows both to the page).
    retry_reason: str = ""
    retry_at: datetime | None = None
    last_sync: float = field(default_factory=time.monotonic)
    status: str = JobStatus.PROCESSING
    # Rows per CPU group, sized from the measured time per row; a task's next chunk starts at it
    # instead of measuring again from CPU_GROUP_ROWS (one sync point fewer per chunk).
    group_rows: int = CPU_GROUP_ROWS
    # Set at a cancel that left rows in a request (hand_over): their chunk's lease lasts this long.
    late_until: datetime | None = None
    # Until when (time.monotonic) the run's last sync point counts the step's next one as queued.
    queued_until: float | None = None

    # -- turning results into rows --
    def collect(self, item: _Item, result: RowResult) -> None:
        result = result.checked()
        if result.usage:
            for key, value in result.usage.items():
                if isinstance(value, (int, float)):
                    self.usage[key] = self.usage.get(key, 0) + int(value)
        if result.retry:
            if result.rate_limited:
                self.rate_limited += 1
                if result.retry_after is not None:
                    self.retry_after = max(self.retry_after or 0.0, result.retry_after)
            if item.attempts < self.job.max_attempts:
                wait_s = backoff_seconds(item.attempts, result.retry_after)
                at = timezone.now() + timedelta(seconds=wait_s)
                self.next_available = (
                    at if self.next_available is None else min(self.next_available, at)
                )
                self.retry_reason = result.reason or reasons.reason_for(result.error) or ""
                self.retry_at = at if self.retry_at is None else min(self.retry_at, at)
                self.finished.append(
                    Done(item.index, RowStatus.PENDING, None, result.error, item.attempts)
                )
                return
            message = f"{result.error} (gave up after {item.attempts} attempts)"
            # The cause stays the service's answer, however many tries it took.
            reason = result.reason or reasons.reason_for(result.error)
            self.finished.append(
                Done(item.index, RowStatus.FAILED, None, message, item.attempts, reason)
            )
            return
        if result.error is not None:
            self.finished.append(
                Done(item.index, RowStatus.FAILED, None, result.error, item.attempts, result.reason)
            )
        else:
            self.succeeded_any = True
            self.finished.append(
                Done(item.index, RowStatus.SUCCEEDED, result.output, None, item.attempts)
            )

    def unstart(self, item: _Item) -> None:
        """A row that was marked running but never began (pause/cancel came first)."""
        self.finished.append(Done(item.index, RowStatus.PENDING, None, None, item.attempts - 1))

    def hand_over(self) -> bool:
        """The job was cancelled: commit the rows already back, so that the rows still in a
        request can be left to the threads that made it (`write_late`) and the loop need not
        wait for them. Returns False when the job is not cancelled after all.

        Their rows stay `running` meanwhile (API.md: rows already running finish and keep their
        results)."""
        self.sync([])
        return self.status == JobStatus.CANCELLED

    def expect_late(self) -> None:
        """Rows were handed over: the chunk stays leased to this process until their requests'
        deadline (release_chunk keeps `late_until`), so the reaper's cleanup of the cancelled
        job leaves them alone until then, or until this process is gone."""
        self.late_until = timezone.now() + timedelta(seconds=self.late_seconds())

    def late_seconds(self) -> float:
        """How long a request left in flight may still take: its processor's timeout, with
        room for a connect and an answer read in turn, and never less than a lease."""
        timeout = (getattr(self.processor, "params", None) or {}).get("timeout")
        lease = float(settings.BATCHHUB_LEASE_SECONDS)
        if not isinstance(timeout, (int, float)):
            return lease
        return max(lease, 2 * float(timeout) + MAX_LATE_MARGIN)

    def write_late(self, item: _Item, result: RowResult | None) -> bool:
        """A row handed over at a cancel (`hand_over`), written when its call came back, as a sync
        point writes it: `result`, or given back when the call never began (None); a row that
        would wait for another try ends cancelled. Only while the row is still `running`: the
        reaper's cleanup may have ended it, and a row is counted once. Returns whether it was
        written. Runs on the calling thread's own connection (the caller closes it)."""
        late = ChunkRun(job=self.job, chunk=self.chunk, processor=self.processor, plan=self.plan)
        if result is None:
            late.unstart(item)
        else:
            late.collect(item, result)
        done = late.finished[0]
        cancelled = Job.objects.filter(pk=self.job.pk, status=JobStatus.CANCELLED).exists()
        if done.status == RowStatus.PENDING and cancelled:
            done.status = RowStatus.CANCELLED
        with transaction.atomic():
            # The row first, then the job's lock, as at every sync point; the reaper's cleanup,
            # which changes running rows, waits for this row or finds it no longer running.
            taken = Row.objects.filter(
                job_id=self.job.pk, index=done.index, status=RowStatus.RUNNING
            ).update(status=done.status)
            if not taken:
                return False
            try:
                with transaction.atomic():
                    write_rows(self.job.pk, [done])
            except Exception as exc:
                if not refused_for_content(exc):
                    raise
                done.status, done.output = RowStatus.FAILED, None
                done.error = refusal_message(exc)
                write_rows(self.job.pk, [done])
            job = Job.objects.select_for_update().get(pk=self.job.pk)
            _count_finished(job, [done])
            update = [*_COUNTERS, "updated_at"]
            if _add_usage(job, late.usage):
                update.append("usage")
            job.save(update_fields=update)
            if done.status == RowStatus.PENDING:
                # Retried since the cancel: its chunk runs it again.
                Chunk.objects.filter(pk=self.chunk.pk).update(done=False)
            livestatus.publish(job, livestatus.NO_NEW_EVENT)
        return True

    # -- the sync point --
    def sync(
        self, to_start: list[_Item], *, mark_rows: bool = True, last: bool = False
    ) -> list[_Item]:
        """Commit finished rows, start `to_start` if the job is still processing.

        Returns the started."""
        finished, self.finished = self.finished, []
        try:
            return self._sync(finished, to_start, mark_rows, last=last)
        except _Refused as refused:
            # Raised by the first write, before anything else in the transaction: it was rolled
            # back whole, and nothing in memory changed yet. Failing the step instead held the
            # chunk for a lease, then counted the batch's rows a worker's death.
            logger.warning(
                "job %s: a sync point's rows were refused (%s); writing them one at a time",
                self.job.public_id,
                refused.__cause__,
            )
            return self._sync(finished, to_start, mark_rows, each=True, last=last)

    def _sync(
        self,
        finished: list[Done],
        to_start: list[_Item],
        mark_rows: bool,
        *,
        each: bool = False,
        last: bool = False,
    ) -> list[_Item]:
        started: list[_Item] = []
        refused: list[Done] = []
        now = timezone.now()
        began = time.monotonic()  # no later than the database's clock in the job's UPDATE
        with transaction.atomic():
            # The rows first, before the job's lock: they belong to this chunk, which only its
            # holder writes, so loops of other worker processes are not kept waiting behind this
            # UPDATE. (Cancel, which writes rows under the job lock, leaves rows in flight alone,
            # so the two never wait on each other.)
            if each:
                refused = write_each(self.job.pk, finished)
                if refused:
                    logger.warning(
                        "job %s: rows %s failed: %s",
                        self.job.public_id,
                        ", ".join(str(d.index + 1) for d in refused[:20]),
                        refused[0].error,
                    )
            else:
                try:
                    write_rows(self.job.pk, finished)
                except Exception as exc:
                    if finished and refused_for_content(exc):
                        raise _Refused from exc
                    raise
            job = Job.objects.select_for_update().get(pk=self.job.pk)
            if job.status == JobStatus.CANCELLED:
                # Rows that would wait for another try will never get one.
                again = [d for d in finished if d.status == RowStatus.PENDING]
                for d in again:
                    d.status = RowStatus.CANCELLED
                if again:
                    Row.objects.filter(job_id=job.pk, index__in=[d.index for d in again]).update(
                        status=RowStatus.CANCELLED
                    )
            _count_finished(job, finished)
            update = [*_COUNTERS, "updated_at", "throttle_streak"]
            queued_at = job.step_queued_at
            if last:
                # The chunk's run ends here, and the step may queue its next one (jobs/steps.py).
                update.append("step_queued_at")
                job.step_queued_at = steps.queued_soon()
            if _add_usage(job, self.usage):
                self.usage = {}
                update.append("usage")
            if self.succeeded_any:
                job.throttle_streak = 0
            job.throttle_streak += self.rate_limited
            self.rate_limited, self.succeeded_any = 0, False
            if finished and _add_sample(job, now):
                update.append("samples")
            if _note_retries(job, self.retry_reason, self.retry_at, finished, now):
                update += ["retry_reason", "retry_at"]
            self.retry_reason, self.retry_at = "", None
            inflight: tuple[int, int] | tuple[None, None] = (None, None)
            if to_start and job.status == JobStatus.PROCESSING:
                started = to_start
                if mark_rows:
                    mark_running(job.pk, started)
                else:
                    # A fast group: recording its range on the chunk costs one small update
                    # instead of rewriting every row; a crash turns the range into suspects.
                    # (The caller starts a run of consecutive pending rows.)
                    inflight = (started[0].index, started[-1].index + 1)
                for item in started:
                    item.attempts += 1
                job.pending -= len(started)
                job.running += len(started)
            job.save(update_fields=update)
            job.step_queued_at = queued_at  # as read: the expression is not read back
            event_id = livestatus.NO_NEW_EVENT
            if refused:
                event_id = states.record(
                    job, "rows_refused", refused_event_message(refused), data=_refused_data(refused)
                ).pk
            livestatus.publish(job, event_id)
            Chunk.objects.filter(pk=self.chunk.pk).update(
                lease_until=now + timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS),
                inflight_start=inflight[0],
                inflight_end=inflight[1],
            )
            if (
                job.status == JobStatus.PROCESSING
                and job.throttle_streak >= settings.BATCHHUB_AUTOPAUSE_AFTER
            ):
                # The wait the service asked for, else a minute.
                wait_s = max(1.0, self.retry_after if self.retry_after is not None else 60.0)
                job = states.transition(
                    job,
                    JobStatus.PAUSED,
                    event_type="auto_paused",
                    message=(
                        f"The service answered 'slow down' (429 or quota) "
                        f"{job.throttle_streak} times in a row; "
                        f"paused; it resumes by itself once {int(wait_s)} s have passed "
                        "(at the next periodic check)."
                    ),
                    # The reaper resumes it at its first run after resume_at (beat's interval).
                    pause_reason=(
                        "Auto-paused: the service kept answering 429 (rate limited). Resumes "
                        f"soon after {(now + timedelta(seconds=wait_s)):%H:%M:%S} UTC."
                    ),
                    resume_at=now + timedelta(seconds=wait_s),
                    throttle_streak=0,
                )
        self.status = job.status
        self.job = job
        self.last_sync = time.monotonic()
        if last:
            self.queued_until = began + steps.QUEUED_WITHIN
        return started


def _note_retries(
    job: Job, reason: str, due: datetime | None, finished: list[Done], now: datetime
) -> bool:
    """Keep on the job why rows wait for another try and when the soonest is due, or forget it
    once a sync point brings rows that ended (the service answers again); whether it changed."""
    if reason:
        if job.retry_at is not None and now < job.retry_at and (due is None or job.retry_at < due):
            due = job.retry_at  # another chunk's rows are due sooner
        reason = reasons.clip(reason)
    elif not finished or not job.retry_reason:
        return False
    changed = (job.retry_reason, job.retry_at) != (reason, due)
    job.retry_reason, job.retry_at = reason, due
    return changed


def _add_sample(job: Job, now: datetime) -> bool:
    samples = job.samples or []
    ts = now.timestamp()
    if samples and ts - samples[-1][0] < SAMPLE_EVERY:
        return False
    samples.append([round(ts, 2), job.succeeded + job.failed + job.cancelled])
    if len(samples) > MAX_SAMPLES:
        # Keep the recent half at full resolution and thin the older half.
        half = len(samples) // 2
        samples = samples[:half:2] + samples[half:]
    job.samples = samples
    return True


@dataclass(slots=True)
class _Item:
    index: int
    ref: str
    data: list[Any]
    attempts: int
