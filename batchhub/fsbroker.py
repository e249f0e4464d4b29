"""kombu's filesystem transport (the embedded default's broker), with each message whole before
any reader can see it, and a worker's stop noticed while it waits for one.

kombu creates a message file under its final name and only then writes it (celery/kombu#1551):
a worker polling the folder in between takes an empty file, fails to read it as JSON and stops
with an "Unrecoverable error", which stops `make run` as a whole, and the message is lost.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import suppress
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

STAMP_DIGITS = 15  # of milliseconds: wider than any uptime


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # kombu takes the files in the order of their names: a stamp of fixed width keeps that
        # the order they were written in when the uptime's count of milliseconds gains a digit.
        name = f"{round(monotonic() * 1000):0{STAMP_DIGITS}d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Readers take only `<stamp>.<queue>.msg`: a leading dot hides the file being written
        # until the rename, which puts it in place whole.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb", buffering=0) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


# How often a wait for a message looks whether the worker was asked to stop.
STOP_CHECK_SECONDS = 0.2


def _stop_requested() -> bool:
    from celery.worker import state

    # The flags hold an exit code once set, and 0 is a code: compared as Celery compares them.
    return any(
        flag is not None and flag is not False
        for flag in (state.should_stop, state.should_terminate)
    )


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection, timeout=None):
        # Celery's loop for a transport that cannot wake it looks for a stop only between two
        # waits of up to 2 s each: Ctrl-C on an idle `make run` sat out that wait first.
        if timeout is None:
            return super().drain_events(connection, timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return super().drain_events(
                    connection, timeout=max(min(left, STOP_CHECK_SECONDS), 0.001)
                )
            except TimeoutError:
                if left <= STOP_CHECK_SECONDS or _stop_requested():
                    raise
