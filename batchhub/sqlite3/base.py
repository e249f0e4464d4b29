"""Django's SQLite backend with the writers of one database file served in turn.

SQLite has one write lock. A writer that finds it taken polls for it in sleeps that grow to
100 ms (SQLite's busy handler), so while two worker processes take it turn about at every
sync point, a web request's write can miss each moment it is free and wait for hundreds of
milliseconds (docs/performance.md, the embedded default). Every transaction this backend
begins (they take the write lock at BEGIN: `transaction_mode` IMMEDIATE) first takes a turn: an
exclusive flock on a file beside the database, tried every millisecond up to the connection's
timeout, so the next writer starts about a millisecond after the last one committed. SQLite's
lock still keeps writers apart (writers outside this backend just do not take turns); the turn
only decides who asks for it next. An in-memory database has no file, and no turns.

A database file this backend creates is made with `auto_vacuum=INCREMENTAL`, so that the space
of deleted jobs can be given back to the file system in short slices (batchhub/dbspace.py). The
mode is fixed when SQLite writes the file's first page, so it is set on a connection of its own
before Django's opens the file (whose `journal_mode=WAL` writes that page): set on every
connection instead, the pragma would write the file's header each time.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager

from django.db.backends.sqlite3 import base
from django.db.transaction import TransactionManagementError
from django.db.utils import OperationalError

TRY_EVERY = 0.001  # seconds between two tries for the turn


class DatabaseWrapper(base.DatabaseWrapper):
    _turn_fd: int | None = None
    _turn_pid: int | None = None  # the process that opened _turn_fd
    _has_turn = False

    def get_new_connection(self, conn_params):
        if not self.is_in_memory_db():
            _make_new_file_incremental(str(self.settings_dict["NAME"]), conn_params)
        return super().get_new_connection(conn_params)

    @contextmanager
    def turn(self, timeout: float | None = None):
        """Hold the writers' turn around statements outside Django's transactions (VACUUM, a
        checkpoint, a transaction begun by hand); `timeout` seconds instead of the connection's."""
        if self.in_atomic_block:
            raise TransactionManagementError("An atomic block holds the turn already.")
        self.ensure_connection()
        self._take_turn(timeout)
        try:
            yield
        finally:
            self._end_turn()

    def _start_transaction_under_autocommit(self) -> None:
        self._take_turn()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._end_turn()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._end_turn()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._end_turn()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._forget_turn_file()

    def _turn_file(self) -> int | None:
        """This connection's descriptor of the turn file, opened in this process."""
        if self._turn_fd is not None and self._turn_pid != os.getpid():
            # Opened before a fork: the lock belongs to the open file, which the parent shares,
            # so this process must neither use nor unlock it (closing its copy is harmless).
            self._forget_turn_file()
        if self._turn_fd is None:
            if self.is_in_memory_db():
                return None
            path = f"{self.settings_dict['NAME']}-turn"
            self._turn_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._turn_pid = os.getpid()
        return self._turn_fd

    def _take_turn(self, timeout: float | None = None) -> None:
        fd = self._turn_file()
        if fd is None:
            return
        if timeout is None:
            timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5.0))
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    # What SQLite itself says when its busy timeout runs out (dbbusy: a 503).
                    raise OperationalError("database is locked (no turn to write)") from None
                time.sleep(TRY_EVERY)
            else:
                self._has_turn = True
                return

    def _end_turn(self) -> None:
        if self._has_turn and self._turn_pid == os.getpid() and self._turn_fd is not None:
            self._has_turn = False
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def _forget_turn_file(self) -> None:
        """End this process's turn, if it holds one, and close this connection's descriptor."""
        self._end_turn()
        fd, self._turn_fd, self._turn_pid, self._has_turn = self._turn_fd, None, None, False
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _make_new_file_incremental(name: str, conn_params: dict) -> None:
    """Give a database file that has no page yet the incremental auto-vacuum mode."""
    if name.startswith("file:"):
        return  # a URI: not a plain path to look at (the project's settings never make one)
    try:
        if os.path.getsize(name) > 0:
            return
    except OSError:
        pass  # not there yet: the connect below creates it
    db = sqlite3.connect(name, timeout=float(conn_params.get("timeout", 5.0)))
    try:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        # Any write makes SQLite write the first page, and with it the mode; a file another
        # process filled meanwhile keeps its own (the pragma changes nothing once there are tables).
        db.execute("PRAGMA user_version=0")
    finally:
        db.close()
