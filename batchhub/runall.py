"""`make run`'s process manager: honcho, giving the worker time to finish the rows in flight.

honcho stops the Procfile's processes with SIGTERM and kills whatever is left after a fixed 5 s.
Celery's warm shutdown lets each running task end, and a worker loop's task ends within seconds
(jobs/runner.py) with its rows done and its chunk released; killed mid-task instead, its rows in
flight were taken over as after a crash, the stop counting as one of their attempts (a row at
its last attempt failed). The wait is the only thing changed.
"""

from __future__ import annotations

import honcho.manager
from honcho.command import main

# Longer than a worker loop's task (jobs/runner.py) plus an I/O row's own timeout, as a rule.
STOP_SECONDS = 60


def run(argv: list[str] | None = None) -> None:
    honcho.manager.KILL_WAIT = STOP_SECONDS
    main(argv)


if __name__ == "__main__":
    run()
