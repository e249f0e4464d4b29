"""The embedded default's database file gives space back: the write-ahead log is cut back to its
limit after checkpoints."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from django.conf import settings
from django.db.utils import ConnectionHandler

MB = 1024 * 1024


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
