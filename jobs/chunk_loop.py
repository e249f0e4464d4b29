"""The chunk loop: fetch a chunk's rows and run them through the processor, in CPU groups or on
a pool of threads for I/O processors, committing at sync points (jobs/syncpoint.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from queue import Empty, SimpleQueue

import orjson
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from batchhub import jsonsafe

from . import livestatus
from .chunks import Plan
from .models import Chunk, Job, JobStatus, Row, RowStatus
from .processors import Processor, RowInput, RowResult, calls
from .ratelimit import RateLimitTimeout, acquire
from .syncpoint import CPU_GROUP_ROWS, ChunkRun, _Item

logger = logging.getLogger(__name__)

# Most rows in one CPU group (see CPU_GROUP_ROWS); a group takes about GROUP_SECONDS.
CPU_GROUP_MAX = 5000
# SQLite has one write lock for the whole database: a smaller most rows per sync point keeps each
# of the engine's write transactions short, so a web request's write finds the lock free sooner.
SQLITE_GROUP_MAX = 1000
GROUP_SECONDS = 0.25
SYNC_INTERVAL = 0.25  # seconds between sync points while I/O rows are in flight
MAX_SYNC_GAP = 5.0  # renew the lease at least this often, even when nothing finished
# A thread about to start a row asks the job's live status (the cache) at most this often.
STOP_CHECK_SECONDS = 0.05
# While rows are in flight the loop itself asks it this often: the threads ask only before a
# row, and may all be waiting on slow requests (then coming back at once, past that limit).
LOOP_CHECK_SECONDS = 0.25


def _row_input(item: _Item, column_names: list[str], input_map: dict[str, str]) -> RowInput:
    # Rows shorter than the header (JSONL rows without the later keys) just lack those keys.
    values = dict(zip(column_names, item.data or (), strict=False))
    inputs = {name: values.get(column) for name, column in input_map.items()} if input_map else {}
    return RowInput(item.index, item.ref, values, inputs)


def fetch_rows(job_pk: int, start: int, end: int) -> list[tuple[int, str, list, int, str]]:
    """(index, ref, data, attempts, status) of the rows still to do in [start, end), in order.

    On PostgreSQL the rows come back as ONE JSON document (an array of arrays) read by a single
    orjson.loads: psycopg building a tuple and a string per column of every row, and a loads per
    row, cost more than the query. On SQLite, plain SQL and one orjson.loads per row: the ORM's
    per-row converters cost more than the query there.
    """
    table = Row._meta.db_table
    where = (
        f'FROM {table} WHERE job_id = %s AND "index" >= %s AND "index" < %s AND status IN (%s, %s)'
    )
    params = [job_pk, start, end, RowStatus.PENDING, RowStatus.RUNNING]
    # orjson's speed, but not its reading of an integer past 64 bits as a float.
    loads = jsonsafe.fast_loads
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT json_agg(json_build_array("index", ref, data, attempts, status))::text '
                f"{where}",
                params,
            )
            (document,) = cursor.fetchone()
        if document is None:
            return []
        # Sorted here, not by the aggregate: PostgreSQL sorts an ordered aggregate's rows, data
        # included, whatever order its scan gave; these nearly always come in order (one pass).
        rows = list(map(tuple, loads(document)))
        rows.sort()
        return rows
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "index", ref, data, attempts, status {where} ORDER BY "index"', params
        )
        raw = cursor.fetchall()
    return [
        (i, ref, loads(data) if isinstance(data, (str, bytes)) else data, a, st)
        for i, ref, data, a, st in raw
    ]


def _group_max() -> int:
    return min(CPU_GROUP_MAX, SQLITE_GROUP_MAX) if connection.vendor == "sqlite" else CPU_GROUP_MAX


def process_chunk(
    job: Job,
    chunk: Chunk,
    processor: Processor,
    plan: Plan,
    group_rows: int = CPU_GROUP_ROWS,
    *,
    next_chunk: Callable[[], Chunk | None] | None = None,
    retire: Callable[[ChunkRun], None] | None = None,
    turn_over: Callable[[float], bool] | None = None,
) -> ChunkRun:
    """Run the chunk's rows; return its run, synced. For an I/O processor, `next_chunk` (a claim)
    lets the loop start the next chunk's rows while this one's last rows are in flight: each
    chunk done before the last is passed to `retire` (default: released), the last returned.
    Once `turn_over` (given the mean time of a row so far) says so, an I/O processor's rows not
    begun go back to pending and the run ends when those in flight are in: the chunk is left for
    the loop's next step."""
    run, queue, to_input, run_group = _start(job, chunk, processor, plan, group_rows)
    if run.status == JobStatus.PROCESSING:
        if processor.io_bound:
            next_feed = None
            if next_chunk is not None:

                def next_feed() -> _Feed | None:
                    taken = next_chunk()
                    if taken is None:
                        return None
                    started = _start(run.job, taken, processor, plan, group_rows)
                    return _Feed(started[0], started[1])

            last = _run_threaded(
                _Feed(run, queue), to_input, next_feed, retire or release_chunk, turn_over
            )
            run = last.run
        else:
            group_max = _group_max()
            while queue and run.status == JobStatus.PROCESSING:
                group = [queue.popleft() for _ in range(min(run.group_rows, len(queue)))]
                started = run.sync(group, mark_rows=False)
                if not started:
                    break
                began = time.monotonic()
                results = run_group(started)
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
    run.sync([], last=True)
    return run


def _start(job: Job, chunk: Chunk, processor: Processor, plan: Plan, group_rows: int):
    """A chunk's run and its rows still to do; the rows a dead holder left in flight (suspects)
    are run first. Returns (run, rows to do, row → processor input, group → results)."""
    run = ChunkRun(
        job=job,
        chunk=chunk,
        processor=processor,
        plan=plan,
        group_rows=min(_group_max(), group_rows),
    )
    rows = fetch_rows(job.pk, chunk.start, chunk.end)
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

    if processor.positional():
        processor.bind_columns(columns)
        by_values = processor.process_values

        def run_group(items: list[_Item]) -> list[RowResult]:
            return [by_values(item.data or ()) for item in items]
    else:

        def run_group(items: list[_Item]) -> list[RowResult]:
            # Guarded: a process (or run_one) of the processor's own may raise.
            return calls.process(processor, [to_input(item) for item in items])

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
        for item, result in zip(started, run_group(started), strict=True):
            run.collect(item, result)
        suspects = suspects[len(part) :]
    return run, queue, to_input, run_group


@dataclass(slots=True)
class _Feed:
    """A chunk on the thread pool: its run, its rows not started yet, its rows in flight."""

    run: ChunkRun
    queue: deque[_Item]
    inflight: int = 0


_NOT_STARTED = object()
# A job being deleted is cancelled first; the cache may say only that it is gone.
_DELETED = "deleted"
_ENDED = (JobStatus.CANCELLED, _DELETED)


class _StopWatch:
    """Whether the job was paused or cancelled, from the live status the web publishes.

    The loop learns it at its next sync point (up to SYNC_INTERVAL away), and meanwhile every
    thread that finished a row would start one of those queued behind it: a request made after
    the person pressed Pause or Cancel, perhaps a paid one. A thread about to start a row asks
    here; the cache is read at most every STOP_CHECK_SECONDS for all threads together. While
    every thread waits on a request none asks, so the loop does (`cancel_seen`): a cancel then
    leaves the rows in flight to their threads instead of waiting for them (`_drop_in_flight`).
    """

    def __init__(self, public_id: str, stop: threading.Event):
        self.public_id = public_id
        self.stop = stop
        self.lock = threading.Lock()
        self.checked = self.looked = time.monotonic()
        self.cancelled = False

    def stopped(self) -> bool:
        if self.stop.is_set():
            return True
        now = time.monotonic()
        with self.lock:
            if now - self.checked < STOP_CHECK_SECONDS:
                return False
            self.checked = now
        status = self._published_status()
        if status in (JobStatus.PAUSED, *_ENDED):
            # The loop's next sync point reads the status from the database and ends.
            self.cancelled = self.cancelled or status in _ENDED
            self.stop.set()
            return True
        return False

    def cancel_seen(self) -> bool:
        """For the loop while rows are in flight: whether the cache says the job was cancelled
        (asked at most every LOOP_CHECK_SECONDS; a pause seen meanwhile stops the threads). The
        database has the last word (ChunkRun.hand_over)."""
        if self.cancelled:
            return True
        now = time.monotonic()
        if now - self.looked < LOOP_CHECK_SECONDS:
            return False
        self.looked = now
        status = self._published_status()
        if status in (JobStatus.PAUSED, *_ENDED):
            self.cancelled = status in _ENDED
            self.stop.set()
        return self.cancelled

    def _published_status(self) -> str | None:
        stored = livestatus.load(self.public_id)
        if stored is None:
            return None
        try:
            published = orjson.loads(stored[1])
        except orjson.JSONDecodeError:
            return None
        if published is None:
            return _DELETED  # the key of a job being deleted (livestatus.forget)
        return published.get("status") if isinstance(published, dict) else None


def _run_threaded(
    first: _Feed,
    to_input: Callable[[_Item], RowInput],
    next_feed: Callable[[], _Feed | None] | None,
    retire: Callable[[ChunkRun], None],
    turn_over: Callable[[float], bool] | None = None,
) -> _Feed:
    """The rows of `first`, then of each chunk `next_feed` brings, on one pool of threads; return
    the last chunk's feed. A chunk's end would otherwise leave the threads idle while its last
    rows drain and the next chunk is claimed and read: a pause of a request's latency or more
    for every thread (docs/performance.md), so the next chunk is claimed as soon as the current
    one has no row left to start, and its rows queue behind the last ones. A chunk whose rows
    are all done goes to `retire`."""
    run = first.run
    job, processor, threads = run.job, run.processor, run.plan.threads
    stop = threading.Event()
    watch = _StopWatch(job.public_id, stop)
    limiter = None
    if job.rate_limit:

        def limiter() -> None:
            # Wait in short steps so that a pause is seen even at a low rate limit.
            while not stop.is_set():
                try:
                    acquire(job.public_id, job.rate_limit, timeout=0.5)
                    return
                except RateLimitTimeout:
                    continue

    handover = _Handover()

    def begins() -> bool:
        if watch.stopped():
            return False
        if limiter is not None:
            limiter()
            return not stop.is_set()
        return True

    def call(item: _Item):
        # Rows are marked running in groups ahead of the pool; one that has not begun when a
        # pause arrives goes back to pending untouched.
        try:
            begun = begins()
        except Exception as exc:  # the cache or the limiter failed: no request was made
            return handover.back(item, _NOT_STARTED, exc)
        if not begun:
            return handover.back(item, _NOT_STARTED)
        try:
            row = to_input(item)
        except Exception as exc:
            return handover.back(item, None, exc)
        # Guarded: a run_one of the processor's own may raise.
        return handover.back(item, calls.run_one(processor, row))

    # Finished calls come back through one queue (a done-callback each) rather than by waiting on
    # every future in flight: concurrent.futures.wait installs and removes a waiter on each of
    # them per call, which at 32 rows in flight and hundreds of rows a second costs more than
    # the requests themselves, all under the interpreter lock.
    feeds = [first]  # in the order claimed; the last one is the one whose rows start
    began, rows_done = time.monotonic(), 0
    inflight: dict[Future, tuple[_Feed, _Item]] = {}
    finished_calls: SimpleQueue[Future] = SimpleQueue()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"job-{job.pk}")
    dropped = False
    try:
        while True:
            now = time.monotonic()
            feed = feeds[-1]
            if (
                turn_over is not None
                and not stop.is_set()
                # A chunk given back waits for its earliest retry: its rows not begun would too.
                and all(each.run.next_available is None for each in feeds)
                and turn_over(threads * (now - began) / max(1, rows_done))
            ):
                # As for a pause, but of this loop only: the job stays processing.
                stop.set()
                next_feed = None
            # Top up when the backlog queued ahead of the threads has run low (a backlog of one
            # to two rows per thread), so that one sync point starts at least `threads` rows:
            # sync points, not requests, are most of the engine's own CPU per row.
            low = len(inflight) <= threads * 2
            if next_feed is not None and low and not feed.queue and not stop.is_set():
                taken = next_feed()
                if taken is None:
                    next_feed = None
                else:
                    feeds.append(taken)
                    feed = taken
            room = 0 if stop.is_set() else 3 * threads - len(inflight)
            want_start = room > 0 and bool(feed.queue) and low
            for each in feeds:
                each_run = each.run
                starting = want_start and each is feed
                want_commit = bool(each_run.finished) and (
                    now - each_run.last_sync >= SYNC_INTERVAL or not each.inflight
                )
                if starting or want_commit or now - each_run.last_sync >= MAX_SYNC_GAP:
                    group = (
                        [each.queue.popleft() for _ in range(min(room, len(each.queue)))]
                        if starting
                        else []
                    )
                    started = each_run.sync(group)
                    if group and not started:
                        each.queue.extendleft(reversed(group))
                    if each_run.status != JobStatus.PROCESSING:
                        stop.set()
                    for item in started:
                        future = pool.submit(call, item)
                        inflight[future] = (each, item)
                        each.inflight += 1
                        future.add_done_callback(finished_calls.put)
            if inflight and (
                any(each.run.status == JobStatus.CANCELLED for each in feeds) or watch.cancel_seen()
            ):
                if _drop_in_flight(feeds, inflight, finished_calls, handover):
                    dropped = True
                else:
                    watch.cancelled = False  # the database says otherwise: retried since
            # Chunks before the current one that have nothing in flight are done with (their
            # rows were all started, or a pause or cancel stopped them).
            for done_feed in [f for f in feeds[:-1] if not f.inflight]:
                done_feed.run.sync([])
                retire(done_feed.run)
                feeds.remove(done_feed)
            if not inflight:
                if stop.is_set() or (not feeds[-1].queue and next_feed is None):
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
                _collect(inflight, future, handover)
                rows_done += 1
    except Job.DoesNotExist:
        # Deleted, its rows with it: nothing a call in flight brings back can be written.
        dropped = True
        raise
    finally:
        # After a cancel the threads still in a request are not waited for: each writes its
        # own row when its request comes back (`_Handover`), at its deadline at the latest, so
        # a cancelled loop leaves at most its `threads` of them behind, for that long at most.
        pool.shutdown(wait=not dropped, cancel_futures=dropped)
    return feeds[-1]


_HANDED = object()  # a call whose row its own thread wrote (`_Handover`)

# Calls handed over and not back yet, by processor: its client must outlive them, so the step
# that ends leaves closing it to the last of them (close_processor).
_LATE_LOCK = threading.Lock()
_LATE_CALLS: dict[int, int] = {}
_CLOSING: dict[int, Processor] = {}


def close_processor(processor: Processor) -> None:
    """Close a step's processor now, or once the calls handed over at a cancel are back."""
    with _LATE_LOCK:
        if _LATE_CALLS.get(id(processor)):
            _CLOSING[id(processor)] = processor
            return
    processor.close()


def _late_call_back(processor: Processor) -> None:
    with _LATE_LOCK:
        key = id(processor)
        _LATE_CALLS[key] -= 1
        if _LATE_CALLS[key]:
            return
        del _LATE_CALLS[key]
        closing = _CLOSING.pop(key, None)
    if closing is not None:
        closing.close()


# A late row's write that found the database away is tried again this often, until the row's
# deadline (ChunkRun.late_until): past it the reaper's cleanup may end the row instead.
LATE_RETRY_SECONDS = 0.5


def _write_late(run: ChunkRun, item: _Item, result: RowResult | None) -> None:
    """run.write_late, again while the database is away (a restart, a failover): the answer came
    back, and API.md says it is kept. A write that did commit before its connection went finds
    its row no longer running the next time: written once."""
    deadline = run.late_until or timezone.now() + timedelta(seconds=run.late_seconds())
    while True:
        try:
            run.write_late(item, result)
            return
        except (OperationalError, InterfaceError) as exc:
            if timezone.now() + timedelta(seconds=LATE_RETRY_SECONDS) >= deadline:
                raise
            logger.warning(
                "job %s: row %d not written yet (%s); trying again",
                run.job.public_id,
                item.index,
                exc,
            )
        try:
            connection.close()
        except (OperationalError, InterfaceError):
            pass
        time.sleep(LATE_RETRY_SECONDS)


class _Handover:
    """Rows whose call the loop stopped waiting for at a cancel: the thread that made the call
    writes the row itself when it comes back (ChunkRun.write_late), as a sync point would have,
    on its own connection, then closes it. A call that comes back before the handover returns
    its result to the loop as usual; the lock decides which, once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.returned: set[int] = set()  # rows (by index) whose call is back with the loop
        self.runs: dict[int, ChunkRun] = {}  # rows handed over, by index

    def back(self, item: _Item, result, exc: Exception | None = None):
        """For the calling thread: its result, or _HANDED when it wrote the row itself. `exc`:
        what the call raised instead (with `_NOT_STARTED`, before its request began)."""
        with self.lock:
            run = self.runs.pop(item.index, None)
            if run is None:
                self.returned.add(item.index)
                if exc is not None:
                    raise exc
                return result
        try:
            if result is _NOT_STARTED:
                if exc is not None:
                    logger.warning(
                        "job %s: row %d never began: %r", run.job.public_id, item.index, exc
                    )
                result = None
            elif exc is not None:
                # As Processor.run_one fails a row whose processor raised; left running, it
                # would wait for the reaper's cleanup at its deadline and end cancelled.
                logger.error("job %s: row %d raised", run.job.public_id, item.index, exc_info=exc)
                result = RowResult(error=f"{exc.__class__.__name__}: {exc}")
            _write_late(run, item, result)
        except Exception:
            logger.exception("job %s: row %d could not be written", run.job.public_id, item.index)
        finally:
            connection.close()  # connections are per thread: this one's ends with its row
            _late_call_back(run.processor)
        return _HANDED

    def take(self, run: ChunkRun, items: list[_Item]) -> set[int]:
        """Hand over those of `items` whose call is not back yet; returns their indexes."""
        with self.lock:
            taken = {item.index for item in items if item.index not in self.returned}
            for index in taken:
                self.runs[index] = run
            if taken:
                with _LATE_LOCK:
                    key = id(run.processor)
                    _LATE_CALLS[key] = _LATE_CALLS.get(key, 0) + len(taken)
        return taken


def _collect(
    inflight: dict[Future, tuple[_Feed, _Item]], future: Future, handover: _Handover
) -> None:
    """A finished call's row into its chunk's run; a call whose row was handed over is not."""
    taken = inflight.pop(future, None)
    if taken is None:
        return
    each, item = taken
    each.inflight -= 1
    handover.returned.discard(item.index)
    result = future.result()
    if result is _NOT_STARTED:
        each.run.unstart(item)
    else:
        each.run.collect(item, result)


def _drop_in_flight(
    feeds: list[_Feed],
    inflight: dict[Future, tuple[_Feed, _Item]],
    finished_calls: SimpleQueue[Future],
    handover: _Handover,
) -> bool:
    """On a cancel, stop waiting for the rows in flight (the deadline of a request can be
    minutes): the loop, and the worker process it holds, are free at once. Their rows stay
    running and keep their results (API.md): each thread writes its own row when its request
    comes back (`_Handover`). A pause or a turn still waits. The calls already back are
    committed; rows whose call never began are given back their attempt. Returns whether any
    row was handed over (the database may say the job is no longer cancelled: then none is)."""
    while True:
        try:
            _collect(inflight, finished_calls.get_nowait(), handover)
        except Empty:
            break
    for future, (each, item) in list(inflight.items()):
        if future.cancel():  # queued behind the threads: it never began, and now never will
            del inflight[future]
            each.inflight -= 1
            each.run.unstart(item)
    dropped = False
    for each in feeds:
        mine = [future for future, (owner, _item) in inflight.items() if owner is each]
        if not each.run.hand_over():  # commits the rows back so far
            continue
        handed = handover.take(each.run, [inflight[future][1] for future in mine])
        for future in mine:
            if inflight[future][1].index in handed:
                del inflight[future]
                each.inflight -= 1
            else:
                _collect(inflight, future, handover)  # came back meanwhile: its result is set now
        if each.run.finished:
            each.run.sync([])
        if handed:
            each.run.expect_late()
            dropped = True
    return dropped


def release_chunk(run: ChunkRun) -> None:
    chunk = run.chunk
    remaining = Row.objects.filter(
        job_id=run.job.pk,
        index__gte=chunk.start,
        index__lt=chunk.end,
        status__in=(RowStatus.PENDING, RowStatus.RUNNING),
    ).exists()
    late = run.late_until is not None
    Chunk.objects.filter(pk=chunk.pk).update(
        # Rows left to their threads at a cancel (ChunkRun.hand_over): the lease, and this
        # process named its holder, keep the reaper's cleanup off them until their deadline.
        lease_until=run.late_until,
        holder=chunk.holder if late else "",
        done=late or not remaining,
        available_at=run.next_available if remaining else None,
    )
