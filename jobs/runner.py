"""Claim and process rows: the worker loop of the job engine.

A job's rows are split into chunks (ranges of row indexes). A worker loop claims one chunk with
a lease (SKIP LOCKED on PostgreSQL; SQLite serialises writers so a plain claim is exclusive),
processes its rows and releases it. Progress is committed at "sync points": one transaction that
writes the finished rows' outputs (one multi-row UPDATE), bumps the job's counters, marks the
next rows running (attempts + 1), renews the lease and reads the job's status, so pause and
cancel are seen within a fraction of a second.

Recovery: a worker killed mid-chunk loses at most the rows it had started. Its chunk is taken
over at once by a loop of the same machine (jobs/holders.py), else when the lease runs out; the
rows it had in flight count the death as an attempt and are run again in halves (bisection), so a
crash costs a few re-runs at full speed and a row that kills its worker every time ends failed
alone after the attempts limit. A loop that loses the database reconnects and gives its chunk
back. Counters stay exact at every commit: `running` is the rows in flight under a live holder.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from queue import Empty, SimpleQueue
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from psycopg import Cursor as PgCursor

from . import holders, states
from .models import Chunk, Job, JobStatus, Row, RowStatus
from .processors import Processor, ProcessorContext, RowInput, RowResult, get_processor_class

logger = logging.getLogger(__name__)

# Rows per sync point for CPU processors: the first group is small, later ones are sized from the
# measured time per row so that a group takes about GROUP_SECONDS (pause stays well under a second)
# and cheap processors commit thousands of rows per statement.
CPU_GROUP_ROWS = 100
CPU_GROUP_MAX = 5000
# SQLite has one write lock for the whole database: a smaller most rows per sync point keeps each
# of the engine's write transactions short, so a web request's write finds the lock free sooner.
SQLITE_GROUP_MAX = 1000
GROUP_SECONDS = 0.25
SYNC_INTERVAL = 0.25  # seconds between sync points while I/O rows are in flight
MAX_SYNC_GAP = 5.0  # renew the lease at least this often, even when nothing finished
STALL_SECONDS = 5.0  # no commit for this long and no chunk held: the job's loops were lost
# A worker task goes on to the job's next chunk until it has run this long: the processor (and its
# HTTP connections) and the measured group size carry over, and the task round trip through the
# broker is paid once per few chunks instead of once per chunk. Tasks stay short.
TASK_SECONDS = 2.0
SAMPLE_EVERY = 1.0  # seconds between throughput samples
MAX_SAMPLES = 240
IO_THREADS_PER_LOOP = 16
IO_CHUNK_ROWS_PER_THREAD = 60
# After losing the database a loop tries to reconnect this often, for this long within its task
# (then its task is queued again), and gives its chunk back as soon as it is connected.
RECONNECT_INTERVAL = 0.25
RECONNECT_SECONDS = 30.0
DATABASE_LOST = (OperationalError, InterfaceError)
# Chunks this process still holds but could not give back (the database stayed away): a later
# loop of this thread may take them without waiting for their lease.
_LEFT_BEHIND: set[int] = set()


@dataclass(frozen=True, slots=True)
class Plan:
    loops: int  # worker loops (Celery tasks in flight) for the job
    threads: int  # rows in flight inside one loop
    chunk_rows: int


def plan_for(job: Job, processor_cls: type[Processor] | None = None) -> Plan:
    processor_cls = processor_cls or get_processor_class(job.processor)
    concurrency = max(1, job.concurrency)
    if processor_cls is not None and processor_cls.io_bound:
        # `concurrency` is a promise to the service being called: the requests in flight over all
        # loops add up to it. Loops of up to IO_THREADS_PER_LOOP threads let a busy job spread
        # over several worker processes.
        loops = math.ceil(concurrency / IO_THREADS_PER_LOOP)
        threads = concurrency // loops
        loops = concurrency // threads  # every loop gets `threads`; none exceeds the total
        # 60 rows a thread: at the end of a chunk its last rows drain and the next one is
        # claimed (~35 ms measured at 16 threads); with 20 a thread that cost 2% of an http job's
        # throughput at C = 32.
        chunk_rows = max(50, threads * IO_CHUNK_ROWS_PER_THREAD)
    else:
        loops, threads = concurrency, 1
        chunk_rows = settings.BATCHHUB_CHUNK_ROWS
    if job.total:
        # Small jobs still spread over every loop.
        chunk_rows = max(1, min(chunk_rows, math.ceil(job.total / loops)))
    return Plan(loops=loops, threads=threads, chunk_rows=chunk_rows)


def chunk_bounds(total: int, chunk_rows: int, loops: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each chunk: full chunks, then smaller ones toward the end of the job.

    Loops claim chunks in order, so with equal chunks the last one can keep one loop busy for a
    whole chunk's time while the others have nothing left (an http job's last 960 rows at 16
    threads: 3 s at half its concurrency). As in guided scheduling, once fewer than two rounds of
    full chunks are left, each chunk is a 2 x loops-th of what remains, down to a 16th of a
    full chunk: the loops run out of work within about one small chunk of each other.
    """
    bounds: list[tuple[int, int]] = []
    start = 0
    smallest = max(1, chunk_rows // 16)
    while start < total:
        remaining = total - start
        size = chunk_rows
        if loops > 1 and remaining < 2 * loops * chunk_rows:
            size = max(smallest, min(chunk_rows, math.ceil(remaining / (2 * loops))))
        bounds.append((start, min(start + size, total)))
        start += size
    return bounds


def make_chunks(job: Job, plan: Plan) -> int:
    chunks = [
        Chunk(job=job, seq=seq, start=start, end=end)
        for seq, (start, end) in enumerate(chunk_bounds(job.total, plan.chunk_rows, plan.loops))
    ]
    Chunk.objects.bulk_create(chunks, batch_size=1000)
    return len(chunks)


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, or what the service asked for."""
    if retry_after is not None and retry_after >= 0:
        return min(float(retry_after), 3600.0)
    ceiling = min(300.0, 2.0 * 2 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# --- claiming ------------------------------------------------------------------------------------


def claimable_chunks(job_pk: int, now: datetime):
    """Chunks of the job a loop could claim now: not done, not leased, not backing off."""
    return (
        Chunk.objects.filter(job_id=job_pk, done=False)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(available_at__isnull=True) | Q(available_at__lte=now))
    )


def _locked(qs):
    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True)
    return qs


def claim_chunk(job_pk: int) -> Chunk | None:
    """Lease the job's next chunk. Its `suspects` are the rows a previous holder died with."""
    now = timezone.now()
    with transaction.atomic():
        chunk = _locked(claimable_chunks(job_pk, now).order_by("seq")).first()
        if chunk is None:
            chunk = _abandoned_chunk(job_pk, now)
            if chunk is None:
                return None
        chunk.lease_until = now + timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
        chunk.claims += 1
        chunk.holder = holders.current()
        chunk.save(update_fields=["lease_until", "claims", "holder"])
        chunk.suspects = take_over(job_pk, chunk)
    return chunk


def _abandoned_chunk(job_pk: int, now: datetime) -> Chunk | None:
    """A leased chunk whose holder is gone (see jobs/holders.py): it need not wait for its lease."""
    leased = Chunk.objects.filter(
        job_id=job_pk,
        done=False,
        lease_until__gte=now,
        holder__startswith=holders.machine() + holders.SEPARATOR,
    ).filter(Q(available_at__isnull=True) | Q(available_at__lte=now))
    me = holders.current()
    for pk, holder in leased.order_by("seq").values_list("pk", "holder")[:64]:
        if holders.is_gone(holder) or (holder == me and pk in _LEFT_BEHIND):
            _LEFT_BEHIND.discard(pk)
            chunk = _locked(Chunk.objects.filter(pk=pk, holder=holder, done=False)).first()
            if chunk is not None:
                return chunk
    return None


def needs_loops(job_pk: int, now: datetime) -> bool:
    """No live loop holds a chunk of the job, and there is one to claim."""
    leased = Chunk.objects.filter(job_id=job_pk, done=False, lease_until__gte=now)
    holders_now = list(leased.values_list("holder", flat=True)[:64])
    if any(not holders.is_gone(holder) for holder in holders_now):
        return False
    return bool(holders_now) or claimable_chunks(job_pk, now).exists()


def take_over(job_pk: int, chunk: Chunk, *, died: bool = True) -> list[int]:
    """Put back the rows a previous holder left in flight; return those to run again as suspects.

    They are the rows marked running (I/O processors) and a CPU group's range recorded on the
    chunk. With `died` (the holder is gone), the death counts as an attempt of each of them, and
    one found alone at the attempts limit is the row that kills its worker: it fails here. The
    counters move them from running to pending in the same transaction. Without `died` (a loop
    that lost the database gives its chunk back) they are just pending again.
    """
    in_flight = Q(status=RowStatus.RUNNING)
    if chunk.inflight_start is not None:
        in_flight |= Q(
            status=RowStatus.PENDING,
            index__gte=chunk.inflight_start,
            index__lt=chunk.inflight_end,
        )
    rows = Row.objects.filter(job_id=job_pk, index__gte=chunk.start, index__lt=chunk.end)
    left = list(rows.filter(in_flight).order_by("index").values_list("index", "status", "attempts"))
    if chunk.inflight_start is not None:
        Chunk.objects.filter(pk=chunk.pk).update(inflight_start=None, inflight_end=None)
        chunk.inflight_start = chunk.inflight_end = None
    if not left:
        return []
    # The job's lock before the rows', as cancel takes them.
    job = Job.objects.select_for_update().get(pk=job_pk)
    first, last = left[0][0], left[-1][0]
    span = rows.filter(index__gte=first, index__lte=last)
    if died:
        # A fast group's rows were started without a write of their own: the death is their
        # attempt. Rows marked running got theirs when they were marked.
        span.filter(in_flight, status=RowStatus.PENDING).update(attempts=F("attempts") + 1)
    attempts = {i: a + (died and st == RowStatus.PENDING) for i, st, a in left}
    culprit = left[0][0] if died and len(left) == 1 else None
    if culprit is not None and attempts[culprit] >= job.max_attempts:
        rows.filter(index=culprit).update(
            status=RowStatus.FAILED,
            error=f"The worker died while processing this row ({attempts[culprit]} attempts).",
        )
        job.running -= 1
        job.failed += 1
        message = (
            f"Row {culprit + 1} stopped its worker {attempts[culprit]} times; it failed alone."
        )
        suspects: list[int] = []
    else:
        span.filter(status=RowStatus.RUNNING).update(status=RowStatus.PENDING)
        job.running -= len(left)
        job.pending += len(left)
        message = (
            f"A worker stopped with rows {first + 1}–{last + 1} in flight ({len(left)} rows); "
            "they run again in halves to find any row that stops workers."
        )
        suspects = [i for i, _, _ in left] if died else []
    job.save(update_fields=["running", "pending", "failed", "updated_at"])
    if died:
        logger.info("job %s: %s", job.public_id, message)
        states.record(job, "recovered", message, data={"rows": [first + 1, last + 1]})
    return suspects


# --- writing -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Done:
    """A finished row on its way to the database."""

    index: int
    status: str
    output: dict[str, Any] | None
    error: str | None
    attempts: int


def dumps_json(value: Any) -> str:
    """JSON text of a processor's outputs: orjson (≈ 15× the stdlib here), else the stdlib for
    what orjson refuses (integers beyond 64 bits); anything else unknown becomes its str()."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, default=str)


def write_rows(job_pk: int, done: list[Done]) -> None:
    """One UPDATE for many rows, with all their values passed as one JSON document.

    Never a statement per row, and never a parameter per value either: thousands of placeholders
    cost more to bind and parse than the update itself.
    """
    if not done:
        return
    table = Row._meta.db_table
    if connection.vendor == "postgresql":
        # One JSON document for the whole batch: orjson writes it, PostgreSQL's C parser reads it
        # (arrays of text would be escaped element by element in Python).
        batch = dumps_json(
            [
                {"i": d.index, "s": d.status, "o": d.output, "e": d.error, "a": d.attempts}
                for d in done
            ]
        )
        connection.ensure_connection()
        with PgCursor(connection.connection) as cursor:
            cursor.execute(
                f"UPDATE {table} AS r SET status = v.s, output = v.o, error = v.e, attempts = v.a "
                f"FROM json_to_recordset(%s::json) AS v(i int, s text, o jsonb, e text, a int) "
                f'WHERE r.job_id = %s AND r."index" = v.i '
                # The range keeps the plan on the few index entries of these rows even when the
                # planner's statistics think the job is tiny (they lag behind a fresh ingest).
                f'AND r."index" BETWEEN %s AND %s',
                [batch, job_pk, min(d.index for d in done), max(d.index for d in done)],
            )
        return
    # SQLite: one prepared UPDATE run for each row (executemany, in C), each a lookup in the
    # unique (job, index) index. A join against the batch (UPDATE … FROM json_each) was planned
    # as a search of the job's rows for every batch row: rows-in-job × rows-in-batch a sync.
    values = [
        (
            d.status,
            None if d.output is None else dumps_json(d.output),
            d.error,
            d.attempts,
            job_pk,
            d.index,
        )
        for d in done
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET status = %s, output = %s, error = %s, attempts = %s "
            f'WHERE job_id = %s AND "index" = %s',
            values,
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


# --- the loop ------------------------------------------------------------------------------------


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
    last_sync: float = field(default_factory=time.monotonic)
    status: str = JobStatus.PROCESSING
    # Rows per CPU group, sized from the measured time per row; a task's next chunk starts at it
    # instead of measuring again from CPU_GROUP_ROWS (one sync point fewer per chunk).
    group_rows: int = CPU_GROUP_ROWS

    # -- turning results into rows --
    def collect(self, item: _Item, result: RowResult) -> None:
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
                self.finished.append(
                    Done(item.index, RowStatus.PENDING, None, result.error, item.attempts)
                )
                return
            message = f"{result.error} (gave up after {item.attempts} attempts)"
            self.finished.append(Done(item.index, RowStatus.FAILED, None, message, item.attempts))
            return
        if result.error is not None:
            self.finished.append(
                Done(item.index, RowStatus.FAILED, None, result.error, item.attempts)
            )
        else:
            self.succeeded_any = True
            self.finished.append(
                Done(item.index, RowStatus.SUCCEEDED, result.output or {}, None, item.attempts)
            )

    def unstart(self, item: _Item) -> None:
        """A row that was marked running but never began (pause/cancel came first)."""
        self.finished.append(Done(item.index, RowStatus.PENDING, None, None, item.attempts - 1))

    # -- the sync point --
    def sync(self, to_start: list[_Item], *, mark_rows: bool = True) -> list[_Item]:
        """Commit finished rows, start `to_start` if the job is still processing.

        Returns the started."""
        finished, self.finished = self.finished, []
        started: list[_Item] = []
        now = timezone.now()
        with transaction.atomic():
            # The rows first, before the job's lock: they belong to this chunk, which only its
            # holder writes, so loops of other worker processes are not kept waiting behind this
            # UPDATE. (Cancel, which writes rows under the job lock, leaves rows in flight alone,
            # so the two never wait on each other.)
            write_rows(self.job.pk, finished)
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
            update = [
                "running",
                "succeeded",
                "failed",
                "pending",
                "cancelled",
                "updated_at",
                "throttle_streak",
            ]
            if self.usage:
                usage = dict(job.usage or {})
                for key, value in self.usage.items():
                    usage[key] = usage.get(key, 0) + value
                job.usage = usage
                self.usage = {}
                update.append("usage")
            if self.succeeded_any:
                job.throttle_streak = 0
            job.throttle_streak += self.rate_limited
            self.rate_limited, self.succeeded_any = 0, False
            if finished and _add_sample(job, now):
                update.append("samples")
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
                        f"paused, resuming by itself in {int(wait_s)} s."
                    ),
                    pause_reason=(
                        "Auto-paused: the service kept answering 429 (rate limited). Resumes at "
                        f"{(now + timedelta(seconds=wait_s)):%H:%M:%S} UTC."
                    ),
                    resume_at=now + timedelta(seconds=wait_s),
                    throttle_streak=0,
                )
        self.status = job.status
        self.job = job
        self.last_sync = time.monotonic()
        return started


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


def _row_input(item: _Item, column_names: list[str], input_map: dict[str, str]) -> RowInput:
    # Rows shorter than the header (JSONL rows without the later keys) just lack those keys.
    values = dict(zip(column_names, item.data or (), strict=False))
    inputs = {name: values.get(column) for name, column in input_map.items()} if input_map else {}
    return RowInput(item.index, item.ref, values, inputs)


def fetch_rows(job_pk: int, start: int, end: int) -> list[tuple[int, str, list, int, str]]:
    """(index, ref, data, attempts, status) of the rows still to do in [start, end), in order.

    Plain SQL and one orjson.loads per row: the ORM's per-row converters cost more than the query,
    and the stdlib's json.loads about four times as much as orjson's for these short arrays.
    """
    table = Row._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "index", ref, data, attempts, status FROM {table} WHERE job_id = %s '
            f'AND "index" >= %s AND "index" < %s AND status IN (%s, %s) ORDER BY "index"',
            [job_pk, start, end, RowStatus.PENDING, RowStatus.RUNNING],
        )
        raw = cursor.fetchall()
    loads = orjson.loads
    return [
        (i, ref, loads(data) if isinstance(data, (str, bytes)) else data, a, st)
        for i, ref, data, a, st in raw
    ]


def _group_max() -> int:
    return min(CPU_GROUP_MAX, SQLITE_GROUP_MAX) if connection.vendor == "sqlite" else CPU_GROUP_MAX


def process_chunk(
    job: Job, chunk: Chunk, processor: Processor, plan: Plan, group_rows: int = CPU_GROUP_ROWS
) -> ChunkRun:
    run = ChunkRun(
        job=job,
        chunk=chunk,
        processor=processor,
        plan=plan,
        group_rows=min(_group_max(), group_rows),
    )
    rows = fetch_rows(job.pk, chunk.start, chunk.end)
    group_max = _group_max()
    columns = list(job.columns or [])
    input_map = {name: (job.column_map or {}).get(name, name) for name in processor.inputs}
    queue: deque[_Item] = deque()
    suspect_indexes = set(getattr(chunk, "suspects", ()))
    suspects: list[_Item] = []
    for index, ref, data, attempts, _status in rows:
        item = _Item(index, ref, data, attempts)
        (suspects if index in suspect_indexes else queue).append(item)

    def to_input(item: _Item) -> RowInput:
        return _row_input(item, columns, input_map)

    # Rows in flight when a worker died: the first half runs as one group; if it comes back, the
    # row that stopped the worker (if one did) is in the other half, which is split again, down
    # to a single row. Every group that survives is done at full speed; one that dies is what
    # the next holder gets as suspects (see take_over), and the rest of these rows run as
    # ordinary rows: a crash costs O(log n) groups, and only a row run alone can be failed for it.
    while suspects and run.status == JobStatus.PROCESSING:
        part = suspects[: max(1, len(suspects) // 2)]
        started = run.sync(part, mark_rows=processor.io_bound)
        if not started:
            break
        for item, result in zip(
            started, processor.process([to_input(i) for i in started]), strict=True
        ):
            run.collect(item, result)
        suspects = suspects[len(part) :]
    if run.status == JobStatus.PROCESSING:
        if processor.io_bound:
            _run_threaded(run, queue, to_input)
        else:
            while queue and run.status == JobStatus.PROCESSING:
                group = [queue.popleft() for _ in range(min(run.group_rows, len(queue)))]
                started = run.sync(group, mark_rows=False)
                if not started:
                    break
                began = time.monotonic()
                results = processor.process([to_input(i) for i in started])
                per_row = (time.monotonic() - began) / len(started)
                run.group_rows = max(
                    1,
                    min(
                        group_max,
                        int(GROUP_SECONDS / per_row) if per_row > 0 else group_max,
                    ),
                )
                for item, result in zip(started, results, strict=True):
                    run.collect(item, result)
    run.sync([])
    return run


_NOT_STARTED = object()


def _run_threaded(run: ChunkRun, queue: deque[_Item], to_input) -> None:
    job, processor, threads = run.job, run.processor, run.plan.threads
    stop = threading.Event()
    limiter = None
    if job.rate_limit:
        from .ratelimit import RateLimitTimeout, acquire

        def limiter() -> None:
            # Wait in short steps so that a pause is seen even at a low rate limit.
            while not stop.is_set():
                try:
                    acquire(job.public_id, job.rate_limit, timeout=0.5)
                    return
                except RateLimitTimeout:
                    continue

    def call(item: _Item):
        # Rows are marked running in groups ahead of the pool; one that has not begun when a
        # pause arrives goes back to pending untouched.
        if stop.is_set():
            return _NOT_STARTED
        if limiter is not None:
            limiter()
            if stop.is_set():
                return _NOT_STARTED
        return processor.run_one(to_input(item))

    # Finished calls come back through one queue (a done-callback each) rather than by waiting on
    # every future in flight: concurrent.futures.wait installs and removes a waiter on each of
    # them per call, which at 32 rows in flight and hundreds of rows a second costs more than
    # the requests themselves, all under the interpreter lock.
    inflight: dict[Future, _Item] = {}
    finished_calls: SimpleQueue[Future] = SimpleQueue()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"job-{job.pk}") as pool:
        while True:
            now = time.monotonic()
            room = 0 if stop.is_set() else 3 * threads - len(inflight)
            # Top up when the backlog queued ahead of the threads has run low (a backlog of one
            # to two rows per thread), so that one sync point starts at least `threads` rows:
            # sync points, not requests, are most of the engine's own CPU per row.
            want_start = room > 0 and bool(queue) and len(inflight) <= threads * 2
            want_commit = bool(run.finished) and (
                now - run.last_sync >= SYNC_INTERVAL or not inflight
            )
            if want_start or want_commit or now - run.last_sync >= MAX_SYNC_GAP:
                group = (
                    [queue.popleft() for _ in range(min(room, len(queue)))] if want_start else []
                )
                started = run.sync(group)
                if group and not started:
                    queue.extendleft(reversed(group))
                if run.status != JobStatus.PROCESSING:
                    stop.set()
                for item in started:
                    future = pool.submit(call, item)
                    inflight[future] = item
                    future.add_done_callback(finished_calls.put)
            if not inflight:
                if stop.is_set() or not queue:
                    break
                continue
            try:
                done = [finished_calls.get(timeout=SYNC_INTERVAL)]
            except Empty:
                continue
            while True:
                try:
                    done.append(finished_calls.get_nowait())
                except Empty:
                    break
            for future in done:
                item = inflight.pop(future)
                result = future.result()
                if result is _NOT_STARTED:
                    run.unstart(item)
                else:
                    run.collect(item, result)


def release_chunk(run: ChunkRun) -> None:
    chunk = run.chunk
    remaining = Row.objects.filter(
        job_id=run.job.pk,
        index__gte=chunk.start,
        index__lt=chunk.end,
        status__in=(RowStatus.PENDING, RowStatus.RUNNING),
    ).exists()
    Chunk.objects.filter(pk=chunk.pk).update(
        lease_until=None,
        holder="",
        done=not remaining,
        available_at=run.next_available if remaining else None,
    )


def give_back(job_pk: int, chunk: Chunk) -> None:
    """Release a chunk this loop could not finish (it lost the database): its rows in flight
    go back to pending, not as suspects, and any loop may claim it at once."""
    with transaction.atomic():
        held = Chunk.objects.select_for_update().filter(pk=chunk.pk, holder=chunk.holder).first()
        if held is None or held.done:
            return  # already taken over
        take_over(job_pk, held, died=False)
        Chunk.objects.filter(pk=held.pk).update(lease_until=None, holder="")


def _database_lost(job_pk: int, chunk: Chunk | None, exc: Exception) -> Step:
    """Reconnect, give the chunk back, and go on; if the database stays away, come back later.

    The transaction that failed was rolled back (or committed just before the connection went):
    either way the database says what is done, and the rows this loop had in memory are redone.
    """
    logger.warning("job %s: lost the database (%s); reconnecting", job_pk, exc)
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        try:
            connection.close()
        except DATABASE_LOST:
            pass
        try:
            connection.ensure_connection()
            if chunk is not None:
                give_back(job_pk, chunk)
            return Step("continue")
        except DATABASE_LOST:
            if time.monotonic() >= deadline:
                if chunk is not None:
                    _LEFT_BEHIND.add(chunk.pk)
                return Step("wait", 1.0)
            time.sleep(RECONNECT_INTERVAL)


# --- one step of a worker loop -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    action: str  # "continue": claim again; "wait": come back after `delay`; "stop"
    delay: float = 0.0


def work_once(job_pk: int, *, seconds: float = 0.0) -> Step:
    """Claim a chunk of the job and process it, and go on to the next one while less than
    `seconds` have passed; say what the loop should do next."""
    held: list[Chunk] = []
    try:
        return _work(job_pk, seconds, held)
    except DATABASE_LOST as exc:
        return _database_lost(job_pk, held[-1] if held else None, exc)


def _work(job_pk: int, seconds: float, held: list[Chunk]) -> Step:
    job = Job.objects.filter(pk=job_pk).first()
    if job is None or job.status != JobStatus.PROCESSING:
        return Step("stop")
    processor_cls = get_processor_class(job.processor)
    if processor_cls is None:
        states.transition(
            job,
            JobStatus.FAILED,
            error=(
                "processor_missing",
                f"The processor '{job.processor}' is not installed on the workers.",
            ),
            message=f"Processor '{job.processor}' is not installed on the workers.",
        )
        return Step("stop")
    began = time.monotonic()
    processor: Processor | None = None
    group_rows = CPU_GROUP_ROWS
    try:
        while True:
            chunk = claim_chunk(job.pk)
            if chunk is None:
                return _no_chunk(job)
            held[:] = [chunk]
            if processor is None:
                plan = plan_for(job, processor_cls)
                processor = processor_cls(
                    job.params,
                    context=ProcessorContext(
                        owner_id=job.owner_id, job_id=job.public_id, concurrency=plan.threads
                    ),
                )
            try:
                run = process_chunk(job, chunk, processor, plan, group_rows)
            except Exception:
                _cancel_leftovers_after_failure(job.pk)
                raise
            release_chunk(run)
            held.clear()
            if run.status != JobStatus.PROCESSING:
                return Step("stop")
            if time.monotonic() - began >= seconds:
                return Step("continue")
            job, group_rows = run.job, run.group_rows  # as of the chunk's last sync point
    finally:
        if processor is not None:
            processor.close()


def _no_chunk(job: Job) -> Step:
    """Nothing to claim: finish the job, wait for backed-off rows, or leave it to other loops."""
    now = timezone.now()
    open_chunks = Chunk.objects.filter(job_id=job.pk, done=False)
    if not open_chunks.exists():
        finalize(job.pk)
        return Step("stop")
    leased = open_chunks.filter(lease_until__gte=now).exists()
    if leased:
        return Step("stop")  # another loop holds work; it finalizes when it is done
    next_at = open_chunks.order_by("available_at").values_list("available_at", flat=True).first()
    if next_at is not None and next_at > now:
        return Step("wait", min(60.0, (next_at - now).total_seconds() + 0.05))
    return Step("continue")


# Rows changed per statement when a whole job's rows change at once (cancel, cleanup): each batch
# is its own short transaction, so the write lock is never held for the whole job.
BULK_ROWS = 10_000


def cancel_leftovers(job_pk: int) -> int:
    """Rows of a cancelled or failed job left `pending` or `running` become `cancelled`.

    They will never run: a worker died or failed mid-chunk after the job was cancelled, or a
    cancel was cut short. Done in index ranges of BULK_ROWS rows, one short transaction each,
    then the counters are set from one count of the rows. Returns the rows changed.
    """
    job = Job.objects.filter(pk=job_pk).first()
    if job is None or job.status not in (JobStatus.CANCELLED, JobStatus.FAILED):
        return 0
    changed = 0
    for start in range(0, job.total, BULK_ROWS):
        changed += Row.objects.filter(
            job_id=job_pk,
            index__gte=start,
            index__lt=start + BULK_ROWS,
            status__in=(RowStatus.PENDING, RowStatus.RUNNING),
        ).update(status=RowStatus.CANCELLED)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_pk)
        counts = recount(job)
        for name, value in counts.items():
            setattr(job, name, value)
        job.save(update_fields=[*counts, "updated_at"])
    if changed:
        logger.info("job %s: %d rows left behind cancelled", job.public_id, changed)
    return changed


def _cancel_leftovers_after_failure(job_pk: int) -> None:
    """A loop failed mid-chunk: if the job was cancelled meanwhile, nobody will run its rows."""
    try:
        if Job.objects.filter(pk=job_pk, status=JobStatus.CANCELLED).exists():
            cancel_leftovers(job_pk)
    except Exception:  # the database may be what failed; the reaper finishes this later
        logger.warning("job %s: leftover rows not cancelled yet", job_pk, exc_info=True)


def recount(job: Job) -> dict[str, int]:
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "cancelled"), 0)
    rows = Row.objects.filter(job_id=job.pk)
    by_status = rows.values_list("status").annotate(n=Count("index")).order_by()
    for status, n in by_status:
        counts[status] = n
    return counts


def finalize(job_pk: int) -> Job | None:
    """Processing → finalizing → completed/partial, exactly once (under the job lock)."""
    # The rows are counted before the lock is taken (a read: on SQLite it does not hold the one
    # write lock for the length of a count of the whole job); under the lock the job's counters
    # must still match it, else it is counted again there.
    counted = recount(Job(pk=job_pk))
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_pk)
        if job.status != JobStatus.PROCESSING:
            return None
        if Chunk.objects.filter(job_id=job.pk, done=False).exists():
            return None
        same = all(getattr(job, k) == v for k, v in counted.items())
        counts = counted if same else recount(job)
        drift = {k: v for k, v in counts.items() if getattr(job, k) != v}
        if drift:
            # Counters are kept per chunk for O(1) polls; this one full count at the end makes
            # sure the finished job's numbers are exact even after crashes.
            logger.warning("job %s counters corrected at finalize: %s", job.public_id, drift)
        for name, value in counts.items():
            setattr(job, name, value)
        _add_sample(job, timezone.now())
        job.save(update_fields=[*counts, "samples", "updated_at"])
        job = states.transition(job, JobStatus.FINALIZING)
        unfinished = job.failed + job.cancelled + job.pending + job.running
        final = JobStatus.PARTIAL if unfinished else JobStatus.COMPLETED
        summary = f"{job.succeeded} succeeded, {job.failed} failed"
        if job.cancelled:
            summary += f", {job.cancelled} cancelled"
        return states.transition(job, final, message=summary + ".")
