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
"""

from __future__ import annotations

import fcntl
import os
import time

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

TRY_EVERY = 0.001  # seconds between two tries for the turn


class DatabaseWrapper(base.DatabaseWrapper):
    _turn_fd: int | None = None
    _turn_pid: int | None = None  # the process that opened _turn_fd
    _has_turn = False

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

    def _take_turn(self) -> None:
        fd = self._turn_file()
        if fd is None:
            return
        deadline = time.monotonic() + float(self.settings_dict["OPTIONS"].get("timeout", 5.0))
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
