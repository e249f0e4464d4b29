"""SQLite's writers take the write lock in turn (batchhub/sqlite3/base.py): a writer kept
waiting starts as soon as the one before it commits, gives up after its timeout as SQLite would
(a 503 for the web), and a forked process never shares its parent's turn."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.db.utils import ConnectionHandler, OperationalError


@pytest.fixture
def handler(tmp_path, django_db_blocker):
    """Connections of BatchHub's SQLite backend to one database file, one per thread and alias:
    `default` waits up to 5 s for the lock, `quick` 0.2 s."""
    path = str(tmp_path / "turns.sqlite3")
    handler = ConnectionHandler(
        {
            alias: {
                "ENGINE": "batchhub.sqlite3",
                "NAME": path,
                "OPTIONS": {"timeout": timeout, "transaction_mode": "IMMEDIATE"},
            }
            for alias, timeout in (("default", 5.0), ("quick", 0.2))
        }
    )
    with django_db_blocker.unblock():
        yield handler
        handler.close_all()


def begin(conn) -> None:
    """What transaction.atomic() does to begin (BEGIN IMMEDIATE: the write lock)."""
    conn.ensure_connection()
    conn.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def commit(conn) -> None:
    conn.commit()
    conn.set_autocommit(True)


def test_a_waiting_writer_starts_as_soon_as_the_one_before_commits(handler):
    # SQLite alone would have the second writer poll in sleeps growing to 100 ms: after a
    # 250 ms hold it starts ~80 ms after the commit (its 11th poll at 228 ms, its 12th at 328).
    released: list[float] = []
    started: list[float] = []
    holding = threading.Event()

    def first() -> None:
        conn = handler["default"]
        begin(conn)
        holding.set()
        time.sleep(0.25)
        commit(conn)
        released.append(time.monotonic())
        conn.close()

    def second() -> None:
        conn = handler["default"]
        holding.wait(5)
        begin(conn)
        started.append(time.monotonic())
        commit(conn)
        conn.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert released and started
    assert 0 <= started[0] - released[0] < 0.05


def test_a_writer_gives_up_after_its_timeout_with_sqlites_words(handler):
    holder = handler["default"]
    begin(holder)
    outcome: list[object] = []

    def waiter() -> None:
        conn = handler["quick"]
        began = time.monotonic()
        try:
            begin(conn)
        except OperationalError as exc:
            outcome.append((str(exc), time.monotonic() - began))
        else:
            outcome.append("began")
        finally:
            conn.close()

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(10)
    commit(holder)
    [(message, waited)] = outcome
    assert "database is locked" in message  # batchhub/dbbusy.py answers 503 for these words
    assert 0.2 <= waited < 1.0


def test_the_turn_is_given_back_when_the_writer_rolls_back_or_closes(handler):
    conn, other = handler["default"], handler["quick"]  # two connections, one thread
    begin(conn)
    conn.rollback()
    conn.set_autocommit(True)
    begin(other)  # would give up after 0.2 s had the rollback kept the turn
    commit(other)
    begin(conn)
    conn.close()  # closing mid-transaction gives it back too
    begin(other)
    commit(other)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_does_not_share_its_parents_turn(handler):
    # Celery's prefork pool forks processes whose connections were opened in the parent: the
    # lock belongs to the open file the two share, so the child must open its own.
    conn = handler["default"]
    begin(conn)
    pid = os.fork()
    if pid == 0:  # the child: another writer; it must wait for the parent's turn, not share it
        code = 1
        try:
            conn.settings_dict["OPTIONS"]["timeout"] = 0.3  # this process's copy
            conn._take_turn()  # the turn alone: the SQLite handle is the parent's
        except OperationalError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    commit(conn)
    assert os.waitstatus_to_exitcode(status) == 0
