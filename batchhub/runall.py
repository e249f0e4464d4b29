"""`make run`'s process manager: honcho, giving the worker time to finish the rows in flight.

honcho stops the Procfile's processes with SIGTERM and kills whatever is left after a fixed 5 s.
Celery's warm shutdown lets each running task end, and a worker loop's task ends within seconds
(jobs/runner.py) with its rows done and its chunk released; killed mid-task instead, its rows in
flight were taken over as after a crash, the stop counting as one of their attempts (a row at
its last attempt failed). So the wait is longer, and a closed terminal (SIGHUP) stops them as
Ctrl-C does: honcho starts each process in a session of its own, where the hang-up never reaches
it, and the site went on running with nobody to stop it.

`python -m batchhub.runall check-free HOST PORT` fails when something already listens there:
`make run` asks before it migrates and recovers work, which would act on a running site's data.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

import honcho.manager
from honcho.command import main

# Longer than a worker loop's task (jobs/runner.py) plus an I/O row's own timeout, as a rule.
STOP_SECONDS = 60


def _hang_up(signum, frame) -> None:
    # Writing to a closed terminal fails: honcho would die of it half-way through stopping the
    # processes. Output into a file or a pipe goes on being written.
    for fd in (1, 2):
        if os.isatty(fd):
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    os.kill(os.getpid(), signal.SIGTERM)  # honcho's own stop


def run(argv: list[str] | None = None) -> None:
    honcho.manager.KILL_WAIT = STOP_SECONDS
    signal.signal(signal.SIGHUP, _hang_up)
    main(argv)


def check_free(host: str, port: int) -> bool:
    # Any address family and name (HOST=:: or localhost), not only IPv4 literals.
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False


if __name__ == "__main__":
    if sys.argv[1:2] == ["check-free"]:
        host, port = sys.argv[2], int(sys.argv[3])
        if not check_free(host, port):
            sys.exit(
                f"Something already listens on {host}:{port}: is BatchHub running already (a "
                f"`make run` in another terminal, or one left after its terminal closed)? Stop "
                f"it first, or start this one with another PORT=."
            )
    else:
        run()
