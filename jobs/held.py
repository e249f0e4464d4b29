"""Job steps a live worker holds and has not started: a delayed step (taken from the queue at
once, kept until due), or one taken ahead that waits for a free pool process. The queue no
longer has them, so the reaper's own message passes them (jobs/steps.py) and they look lost;
only the workers can say. A worker answers from its main process, which is free while its pool
is busy; a worker that is gone does not answer, and its steps are taken for lost as before.
"""

from __future__ import annotations

import logging

from celery import current_app
from celery.worker import state as worker_state
from celery.worker.control import inspect_command

logger = logging.getLogger(__name__)

COMMAND = "batchhub_held_steps"
# How long the reaper waits for the workers' answers: once a round, and only in a round where a
# job looks lost. A worker's main process answers within milliseconds, its pool busy or not.
ASK_SECONDS = 1.0
STEP_TASK = "jobs.work"


@inspect_command()
def batchhub_held_steps(state, **kwargs) -> list[list]:
    """[job pk, start count] of each step this worker holds and has not started."""
    active = worker_state.active_requests
    # Due and waiting for a pool process (reserved), or not due yet (scheduled).
    waiting = [*worker_state.reserved_requests, *getattr(worker_state, "scheduled_requests", ())]
    return [
        [request.args[0], request.args[1] if len(request.args) > 1 else None]
        for request in waiting
        if request.name == STEP_TASK and request not in active and request.args
    ]


def held() -> set[tuple[int, int | None]] | None:
    """(job pk, start count) of the steps live workers hold; None when they could not be asked
    (the broker away)."""
    try:
        replies = current_app.control.broadcast(COMMAND, reply=True, timeout=ASK_SECONDS)
    except Exception as exc:  # redis-py's and kombu's errors alike: only a hint is lost
        logger.info("could not ask the workers which steps they hold (%s)", exc)
        return None
    found: set[tuple[int, int | None]] = set()
    for reply in replies or ():
        for answer in reply.values():
            if not isinstance(answer, list):
                continue  # a worker without the command (a rolling upgrade) answers an error
            found.update((item[0], item[1]) for item in answer if len(item) == 2)
    return found


def holds(steps: set[tuple[int, int | None]], job_pk: int, generation: int) -> bool:
    """Whether a held step is one of the job's current start (a step without a count runs for
    any start; one of an earlier start stops when it runs)."""
    return (job_pk, generation) in steps or (job_pk, None) in steps
