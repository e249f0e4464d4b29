"""Workers run at a lower CPU priority, so that on a shared machine the web process comes first.

On a one-box install (`make run`) the worker processes a big job with every core it can get, and
the site's pages and status polls queue behind it. With the workers at nice 10 the scheduler
gives the web process and the database the CPU whenever they want it, and the workers everything
else: a job loses nothing while nobody is looking at the site. On a machine of their own the
workers are alone anyway and the setting changes nothing.

Linux autogroups (on by default in most distributions) complicate this: nice only weighs the
processes of one session against each other, and every session gets an equal share. honcho
starts each Procfile process in a session of its own (the Procfile `exec`s the worker, so that it
leads that session rather than a shell), and a worker that leads its session lowers the
session's group as well (/proc/self/autogroup). A worker started from a shell shares the shell's
session and leaves the group alone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)
AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(nice: int) -> None:
    """Run this process, and the processes it forks from now on, at least at `nice` (0 to 19)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    nice = min(nice, 19)
    if os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    group = ""
    if os.getsid(0) == os.getpid():
        try:
            # "/autogroup-123 nice 0"; empty in the root group (a session begun at boot)
            if int(AUTOGROUP.read_text().split()[-1]) < nice:
                AUTOGROUP.write_text(str(nice))
                group = " (and its session's scheduling group)"
        except (OSError, ValueError, IndexError):
            pass  # not Linux, or no autogroups: nice alone does it
    logger.info("worker runs at nice %d%s", os.getpriority(os.PRIO_PROCESS, 0), group)
