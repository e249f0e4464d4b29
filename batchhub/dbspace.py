"""An embedded (SQLite) database giving the space of deleted jobs back to the file system.

Deleting rows frees pages inside the database file, which SQLite keeps for its next writes: a file
that once held a few large jobs stays that size after they are gone. A file made with incremental
auto-vacuum (new ones are: batchhub/sqlite3/base.py) gives its free pages back with `PRAGMA
incremental_vacuum(N)`, which moves the file's last pages into free ones and cuts its end.
`give_back` does that in slices, each one short write transaction taken in turn with the web's
and the workers' writes, and rests between them, so a writer that comes meanwhile waits for one
slice at most. The file shrinks when a checkpoint has copied the last slice into it; the
write-ahead log is then cut back to its limit (settings' journal_size_limit).

A file made before that (auto_vacuum NONE) has no page map to move pages by: `compact` rewrites
it whole with VACUUM, switching the mode on the way, and every write waits while it copies
(`manage.py compact_database`). PostgreSQL's autovacuum does all this by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from django.db import DatabaseError
from django.db import connection as default_connection

logger = logging.getLogger(__name__)

# Free space left in the file for the next jobs' rows: giving back what is written again at once
# would only move pages for nothing.
KEEP_BYTES = 4 * 1024 * 1024
# How long one slice may hold the write lock; its pages are sized from the last slice's time.
SLICE_SECONDS = 0.02
FIRST_SLICE_PAGES = 256
MIN_SLICE_PAGES, MAX_SLICE_PAGES = 16, 16384
# At least this long between two slices, and as long as the last slice held the lock: the
# others' writes go first.
REST_SECONDS = 0.005
# One run of the periodic step stops after this long; the next run goes on. It holds one of the
# worker's pool processes (two on the embedded default) from the jobs' chunks meanwhile.
RUN_SECONDS = 2.0
# A checkpoint that cuts the write-ahead log holds writers back while readers finish: no longer.
TRUNCATE_WAIT_MS = 100
# What VACUUM copies a second, for the estimate said before it starts: half what it did on a
# small shared machine (docs/performance.md).
VACUUM_BYTES_PER_SECOND = 60 * 1024 * 1024

MODES = {0: "none", 1: "full", 2: "incremental"}


@dataclass(frozen=True)
class Space:
    path: str
    page_size: int
    pages: int  # the database's pages, free ones included (the file once checkpointed)
    free_pages: int
    mode: str  # auto_vacuum: none, full or incremental
    file_bytes: int  # on disk now
    wal_bytes: int

    @property
    def free_bytes(self) -> int:
        return self.free_pages * self.page_size

    @property
    def used_bytes(self) -> int:
        return (self.pages - self.free_pages) * self.page_size


@dataclass
class GivenBack:
    pages: int = 0
    slices: int = 0
    longest_hold: float = 0.0  # seconds one slice held the write lock
    page_size: int = 0

    @property
    def bytes(self) -> int:
        return self.pages * self.page_size


def _is_file(conn) -> bool:
    return conn.vendor == "sqlite" and not conn.is_in_memory_db()


def _pragma(cursor, name: str) -> int:
    cursor.execute(f"PRAGMA {name}")
    return int(cursor.fetchone()[0])


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def space(conn=None) -> Space | None:
    """The SQLite file's size and free pages; None for PostgreSQL or an in-memory database."""
    conn = conn or default_connection
    if not _is_file(conn):
        return None
    with conn.cursor() as cursor:
        page_size = _pragma(cursor, "page_size")
        pages = _pragma(cursor, "page_count")
        free = _pragma(cursor, "freelist_count")
        mode = MODES.get(_pragma(cursor, "auto_vacuum"), "none")
    path = str(conn.settings_dict["NAME"])
    return Space(path, page_size, pages, free, mode, _size(path), _size(f"{path}-wal"))


def give_back(
    conn=None, *, keep_bytes: int = KEEP_BYTES, seconds: float = RUN_SECONDS
) -> GivenBack:
    """Give the free pages beyond `keep_bytes` back to the file system, a slice at a time, for
    up to `seconds`; then checkpoint so the file and its log shrink now rather than later."""
    conn = conn or default_connection
    done = GivenBack()
    now = space(conn)
    if now is None:
        return done
    done.page_size = now.page_size
    keep = keep_bytes // now.page_size
    if now.mode == "incremental" and now.free_pages > keep:
        _slices(conn, keep, seconds, done)
    checkpoint(conn)
    if done.pages:
        after = space(conn)
        logger.info(
            "Gave %s of the database's free space back in %d slices (the longest held writes "
            "for %.0f ms); the file is %s, %s of it free",
            megabytes(done.bytes),
            done.slices,
            done.longest_hold * 1000,
            megabytes(after.file_bytes),
            megabytes(after.free_bytes),
        )
    return done


def _slices(conn, keep: int, seconds: float, done: GivenBack) -> None:
    with conn.cursor() as cursor:
        automatic = _pragma(cursor, "wal_autocheckpoint")
        # A commit's own checkpoint would copy the slice into the file while this process still
        # holds the writers' turn: the slices are checkpointed between turns instead.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    try:
        pages = FIRST_SLICE_PAGES
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            held = _slice(conn, keep, pages, done)
            if held is None:
                return
            # Sized from the last slice's pace, growing at most twofold: pages moved from the
            # file's end into gaps cost several times more than free pages cut from it.
            want = pages
            pages = int(pages * SLICE_SECONDS / max(held, 0.0001))
            pages = max(MIN_SLICE_PAGES, min(MAX_SLICE_PAGES, 2 * want, pages))
            began = time.monotonic()
            _passive(conn)
            time.sleep(max(REST_SECONDS, held - (time.monotonic() - began)))
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint={automatic}")


def _slice(conn, keep: int, pages: int, done: GivenBack) -> float | None:
    """One slice of up to `pages` pages; the seconds it held the write lock, or None when the
    free list is down to `keep` pages."""
    with conn.turn(), conn.cursor() as cursor:
        cursor.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held until the commit
        began = time.monotonic()
        try:
            want, freed = min(pages, _pragma(cursor, "freelist_count") - keep), 0
            if want > 0:
                # Each page freed is a step of the statement: all of them need the fetch.
                cursor.execute(f"PRAGMA incremental_vacuum({want})")
                freed = len(cursor.fetchall())
            cursor.execute("COMMIT")
        except BaseException:
            # A connection that broke cannot roll back: the error to raise is the first one.
            with contextlib.suppress(DatabaseError):
                cursor.execute("ROLLBACK")
            raise
        held = time.monotonic() - began
    if want <= 0:
        return None
    done.pages += freed
    done.slices += 1
    done.longest_hold = max(done.longest_hold, held)
    return held if freed == want else None


def _passive(conn) -> tuple[int, int, int]:
    """Copy what the log holds into the file without a lock that writers wait for (frames
    written meanwhile wait for the next checkpoint): (busy, frames in the log, frames copied)."""
    with conn.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return tuple(cursor.fetchone())


def checkpoint(conn=None) -> None:
    """Copy the log into the file (which cuts the file's freed end) and, when that caught up and
    the log is over its limit, cut the log back too, waiting only briefly for readers."""
    conn = conn or default_connection
    if not _is_file(conn):
        return
    busy, logged, copied = _passive(conn)
    with conn.cursor() as cursor:
        limit = _pragma(cursor, "journal_size_limit")
    path = str(conn.settings_dict["NAME"])
    if busy or logged != copied or limit < 0 or _size(f"{path}-wal") <= limit:
        return
    with conn.turn(), conn.cursor() as cursor:
        # TRUNCATE holds the write lock while readers of the old log finish: a short wait only.
        wait = _pragma(cursor, "busy_timeout")
        cursor.execute(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
        try:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.fetchone()
        finally:
            cursor.execute(f"PRAGMA busy_timeout={wait}")


def compact(conn=None, *, timeout: float = 60.0) -> float:
    """Rewrite the file with VACUUM in incremental auto-vacuum mode; returns the seconds writes
    waited for it. It takes the writers' turn first (up to `timeout` seconds) so it comes next
    instead of polling for a free moment between the workers' writes."""
    conn = conn or default_connection
    with conn.turn(timeout), conn.cursor() as cursor:
        began = time.monotonic()
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("VACUUM")
        held = time.monotonic() - began
    checkpoint(conn)
    return held


def vacuum_estimate(now: Space) -> str:
    """How long VACUUM should hold writes on this file, in words: it copies the pages in use."""
    seconds = now.used_bytes / VACUUM_BYTES_PER_SECOND
    return "under a second" if seconds < 1 else f"about {seconds:.0f} s"


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):,.1f} MB"


def start_note(conn=None) -> str | None:
    """A line for `make run`'s start when the file keeps much free space it cannot give back."""
    now = space(conn)
    if now is None or now.mode == "incremental" or now.free_bytes <= KEEP_BYTES:
        return None
    return (
        f"The database file {now.path} is {megabytes(now.file_bytes)}, "
        f"{megabytes(now.free_bytes)} of it free space it keeps (made before it could give space "
        "back): `python manage.py compact_database` gives it back, holding writes for "
        f"{vacuum_estimate(now)}."
    )
