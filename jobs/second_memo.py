"""A small per-process memo whose entries live for the current wall-clock second only.

Status polls render the same answer many times a second (every open page and script polling the
same job); an answer that depends on the time only to the second can be reused within it. Keys
name the second they were made in, and an entry from an earlier second is never returned: the
first `put` of a new second drops every older entry. Bounded, so a burst of distinct keys costs
at most `size` entries (the oldest go first).
"""

from __future__ import annotations

import threading
import time
from typing import Any


def current_second() -> int:
    return int(time.time())


class SecondMemo:
    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._second: int | None = None
        self._entries: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, second: int) -> Any:
        """The value put under `key` in `second`, or None (another second, or never put)."""
        if second != self._second or second != current_second():
            return None
        return self._entries.get(key)

    def put(self, key: Any, value: Any, second: int) -> None:
        """Keep `value` for the rest of `second`; nothing when that second has already passed."""
        if second != current_second():
            return  # made across a second's turn: it may already be stale
        with self._lock:
            if second != self._second:
                if self._second is not None and second < self._second:
                    return  # a slow thread's answer from a second already left behind
                self._entries = {}
                self._second = second
            entries = self._entries
            while len(entries) >= self.size:
                del entries[next(iter(entries))]
            entries[key] = value

    def clear(self) -> None:
        with self._lock:
            self._entries = {}
            self._second = None
