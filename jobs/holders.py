"""Who holds a chunk's lease, and whether that holder is gone.

A lease says how long a chunk stays reserved without news from its holder; waiting it out after
a crash costs the whole lease. A holder is named by its machine, process id, process start time
and thread, so a loop on the same machine can tell at once that the process holding a chunk has
exited (killed by the kernel, by an operator or by the row it was processing) and take the chunk
over. On another machine nothing can be known; there the lease still decides.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import cache
from pathlib import Path

SEPARATOR = "|"


@cache
def machine() -> str:
    """This machine as seen by its processes: host name plus PID namespace.

    Containers sharing a host name (host networking) still have PID namespaces of their own, and
    a process id only means something inside its namespace.
    """
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, "" without /proc, None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # The command name (field 2) may hold spaces: split after its closing paren. Field 3 is the
    # state (a zombie has exited, only its parent has not reaped it yet), field 22 the start.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive_without_proc(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@cache
def _process() -> tuple[int, str]:
    pid = os.getpid()
    return pid, _start_time(pid) or ""


def current() -> str:
    """This thread of this process (a forked pool process gets its own, see the cache reset)."""
    pid, started = _process()
    if pid != os.getpid():  # forked since the cache was filled
        _process.cache_clear()
        pid, started = _process()
    return SEPARATOR.join((machine(), str(pid), started, str(threading.get_ident())))


def is_gone(holder: str) -> bool:
    """True when the holder is a process of this machine that no longer runs."""
    if not holder:
        return False
    try:
        where, pid_text, started, _thread = holder.rsplit(SEPARATOR, 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if where != machine():
        return False
    now = _start_time(pid)
    if now is None:
        return True
    if now == "" or started == "":
        return not _alive_without_proc(pid)
    return now != started  # the id was reused by a newer process
