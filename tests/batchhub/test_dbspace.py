"""The embedded default's database file gives the space of deleted jobs back (batchhub/dbspace.py):
new files are made for it, the beat's step shrinks them in short slices, the write-ahead log is
cut back after checkpoints, and an older file is compacted once by `manage.py compact_database`.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.utils import ConnectionHandler

from batchhub import dbspace

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CACHE_URL")}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'batchhub.sqlite3'}",
            "BATCHHUB_DATA_DIR": str(tmp_path),
            "MEDIA_ROOT": str(tmp_path / "media"),
            "DJANGO_SETTINGS_MODULE": "batchhub.settings",
            "BATCHHUB_TESTING": "0",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def run(args: list[str], tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_a_deleted_jobs_space_goes_back_to_the_file_system_at_the_beats_step(tmp_path):
    out = run([str(ROOT / "tests/support/space_child.py"), str(tmp_path), "15000"], tmp_path)
    figures = json.loads(out.strip().splitlines()[-1])
    ran, deleted, stepped = figures["ran"], figures["deleted"], figures["stepped"]

    # The file `migrate` made can give pages back; the job filled it with more than it keeps.
    assert ran["mode"] == "incremental"
    free = deleted["free_pages"] * deleted["page_size"]
    assert free > 2 * figures["keep_bytes"], deleted
    # The step gave back all but what it keeps for the next jobs' rows, and the file on disk
    # shrank by that much at once (its checkpoint), not at some later write.
    given = free - figures["keep_bytes"]
    assert stepped["free_pages"] * stepped["page_size"] <= figures["keep_bytes"]
    assert stepped["file_bytes"] <= deleted["file_bytes"] - 0.9 * given, (deleted, stepped)
    assert stepped["file_bytes"] <= 0.6 * ran["file_bytes"], (ran, stepped)


def test_the_step_is_on_the_beat_schedule_of_the_embedded_default_only():
    scheduled = "give-back-space" in settings.CELERY_BEAT_SCHEDULE
    assert scheduled == (connection.vendor == "sqlite")


@pytest.mark.django_db
def test_the_suites_in_memory_database_is_left_as_it_was():
    assert dbspace.space() is None
    assert dbspace.give_back().pages == 0
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA auto_vacuum")
            assert cursor.fetchone()[0] == 0


# --- the write-ahead log ------------------------------------------------------------------------


@pytest.fixture
def project_sqlite(tmp_path, django_db_blocker):
    """A connection of BatchHub's SQLite backend, with the project's options, to a new file."""
    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "batchhub.sqlite3",
                "NAME": str(tmp_path / "wal.sqlite3"),
                "OPTIONS": {
                    "timeout": 5.0,
                    "transaction_mode": "IMMEDIATE",
                    "init_command": settings.BATCHHUB_SQLITE_INIT_COMMAND,
                },
            }
        }
    )
    with django_db_blocker.unblock():
        conn = handler["default"]
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE filler (blob BLOB)")
        yield conn
        handler.close_all()


def write(conn, megabytes: int) -> None:
    with conn.cursor() as cursor:
        for _ in range(megabytes):
            cursor.execute(
                "INSERT INTO filler SELECT randomblob(1000) FROM "
                "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
                "SELECT i FROM n)"
            )


def grow_the_log_past_its_limit(conn) -> Path:
    """What deleting a big job while pages are read did: a reader holds the log's start, so
    checkpoints cannot catch up and the log grows with every write."""
    path = Path(conn.settings_dict["NAME"])
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM filler").fetchone()
    write(conn, 24)
    reader.execute("COMMIT")
    reader.close()
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > settings.BATCHHUB_SQLITE_WAL_LIMIT_BYTES + 4 * MB
    return wal


def test_the_log_is_cut_back_to_its_limit_once_a_checkpoint_lets_it_start_over(project_sqlite):
    wal = grow_the_log_past_its_limit(project_sqlite)
    # The site writes on: a commit's checkpoint catches up, the next write starts the log over.
    write(project_sqlite, 1)
    write(project_sqlite, 1)
    assert wal.stat().st_size <= settings.BATCHHUB_SQLITE_WAL_LIMIT_BYTES


def test_the_step_cuts_the_log_back_on_a_site_that_writes_nothing_more(project_sqlite):
    wal = grow_the_log_past_its_limit(project_sqlite)

    dbspace.give_back(project_sqlite)

    assert wal.stat().st_size <= settings.BATCHHUB_SQLITE_WAL_LIMIT_BYTES


def test_slices_give_the_lock_to_a_writer_in_between(project_sqlite, tmp_path):
    write(project_sqlite, 48)
    with project_sqlite.cursor() as cursor:
        cursor.execute("DELETE FROM filler WHERE rowid % 4 != 0")  # gaps to move pages into
    waits: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        # Another process's web request, writing every 20 ms while the step runs.
        db = sqlite3.connect(project_sqlite.settings_dict["NAME"], timeout=5, isolation_level=None)
        while not stop.is_set():
            began = time.monotonic()
            db.execute("BEGIN IMMEDIATE")
            waits.append(time.monotonic() - began)
            db.execute("INSERT INTO filler VALUES (x'00')")
            db.execute("COMMIT")
            time.sleep(0.02)
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        given = dbspace.give_back(project_sqlite, keep_bytes=0)
    finally:
        stop.set()
        thread.join(10)
    assert given.bytes > 20 * MB and given.slices > 3
    assert dbspace.space(project_sqlite).free_pages == 0
    # Each slice is sized to hold writes for about SLICE_SECONDS; a busy machine's hiccups aside.
    assert given.longest_hold < 0.25
    assert max(waits) < 0.5


# --- a file made before: compact_database ---------------------------------------------------------


def test_an_older_file_is_named_at_start_and_compacted_once_by_the_command(tmp_path):
    db = tmp_path / "batchhub.sqlite3"
    old = sqlite3.connect(db)
    old.execute("PRAGMA user_version=0")  # a file made by the release before: auto_vacuum none
    old.close()
    run(["manage.py", "migrate", "--noinput", "-v0"], tmp_path)
    old = sqlite3.connect(db, isolation_level=None)
    old.execute("CREATE TABLE scratch (blob BLOB)")
    old.execute(
        "INSERT INTO scratch SELECT randomblob(1000) FROM "
        "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "SELECT i FROM n)"
    )
    old.execute("DROP TABLE scratch")
    old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    old.close()
    before = db.stat().st_size
    assert before > 16 * MB

    start = run(["manage.py", "ensure_admin"], tmp_path)
    assert f"The database file {db} is " in start
    assert "`python manage.py compact_database` gives it back" in start

    out = run(["manage.py", "compact_database"], tmp_path)
    assert "auto_vacuum none" in out and "VACUUM held writes for" in out
    assert db.stat().st_size < before / 10
    assert "auto_vacuum incremental" in out.splitlines()[-1]
    again = run(["manage.py", "ensure_admin"], tmp_path)
    assert "compact_database" not in again


@pytest.mark.django_db
def test_the_command_has_nothing_to_do_on_postgresql_or_in_memory():
    out = io.StringIO()
    call_command("compact_database", stdout=out)
    if connection.vendor == "postgresql":
        assert "autovacuum gives space back by itself; nothing to do" in out.getvalue()
    else:
        assert "in memory: it has no file to compact" in out.getvalue()
