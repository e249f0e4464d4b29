"""kombu's filesystem transport (the embedded default's broker), with each message whole before
any reader can see it.

kombu creates a message file under its final name and only then writes it (celery/kombu#1551):
a worker polling the folder in between takes an empty file, fails to read it as JSON and stops
with an "Unrecoverable error", which stops `make run` as a whole, and the message is lost.
"""

from __future__ import annotations

import os
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


class Transport(filesystem.Transport):
    Channel = Channel
