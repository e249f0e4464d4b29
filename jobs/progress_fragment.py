"""The job page's live part (the `progress` partial of templates/jobs/detail.html): its context,
and the answer to its once-a-second poll, rendered once a second per job and state.

Every open page of a running job polls this partial each second, and building its context and
rendering it costs several times the rest of the answer (docs/performance.md). Within one second
the fragment depends only on what the memo's key names: the job's live-status key as stored (its
payload text and newest event id), the status the page last saw (the announcement), the script
prefix (the links) and the user. The context's figures of now (rate, ETA, how long the job has
run) are taken once, so a fragment made in this second is the one a fresh render would give.

`live_answer` is the answer from the live status, for the view and for the same poll answered
below the stack (accounts/fast_page_poll.py). What is per request stays per request: the job is
only answered to its owner (anyone else gets the 404 of services.get_job, never a memo). The
fragment holds no CSRF token: it only ever answers htmx, which posts its forms with the page's
token in a header (templates/base.html), so no answer masks a token or renews the CSRF cookie.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.loader import get_template
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from . import charts, livestatus, progress, second_memo, services, states
from .models import Job, JobStatus
from .poll import page_live
from .runner import PARAMS_REFUSED

# HTTP 286 tells htmx to stop polling (https://htmx.org/docs/#polling).
STOP_POLLING = 286
TEMPLATE = "jobs/detail.html#progress"

_memo = second_memo.SecondMemo(512)


def controls(job: Job) -> dict[str, bool]:
    return {
        "pause": states.can_transition(job, JobStatus.PAUSED),
        "resume": job.status == JobStatus.PAUSED
        and states.can_transition(job, JobStatus.PROCESSING),
        "cancel": states.can_transition(job, JobStatus.CANCELLED),
        # services.retry takes failed rows of a finished or paused job back to work, unless the
        # workers refuse the job's params (it would only fail again).
        "retry": job.failed > 0
        and (job.is_terminal or job.status == JobStatus.PAUSED)
        and job.error_code != PARAMS_REFUSED
        # Refused (409) while rows started before a cancel still finish: offered once they have.
        and not job.finishing_after_cancel,
    }


def last_event_id(job: Job) -> int:
    """The newest timeline entry's id (0 for none): the page reloads its timeline when it moves.

    The page's own reads bring it with the job (services.get_job(..., last_event=True) or the
    live status); a job read otherwise (after an action) asks once."""
    if getattr(job, "last_event_id", None) is None:
        job.last_event_id = job.events.order_by("-id").values_list("id", flat=True).first() or 0
    return job.last_event_id


def _seen(job: Job) -> str:
    return f"{job.status}-{job.done}-{last_event_id(job)}-{job.failed}"


def parse_seen(seen: str) -> tuple[str, int, int | None, int | None] | None:
    """What the page showed at its last poll: (status, rows done, newest event id or None, rows
    failed or None).

    A page loaded before the event id (or the failed count) was part of it sends "status-done"
    ("status-done-event"); None means the parameter is missing or mangled, and nothing is
    announced.
    """
    parts = seen.split("-")
    try:
        if 2 <= len(parts) <= 4:
            numbers = [int(part) for part in parts[1:]] + [None] * (4 - len(parts))
            return parts[0], numbers[0], numbers[1], numbers[2]
    except ValueError:
        pass
    return None


def _chart_samples(job: Job) -> list[list[float]]:
    """The samples count cancelled rows as done: capped at the rows processed, a cancel is not
    drawn as a burst of thousands of rows a second."""
    samples = job.samples or []
    if not job.cancelled:
        return samples
    cap = progress.processed(job)
    return [[s[0], min(s[1], cap)] for s in samples if len(s) >= 2]


@functools.lru_cache(maxsize=4096)
def _urls(script_prefix: str, public_id: str) -> dict[str, str]:
    # The live part's links never change for a job: reversed once, not at every poll.
    del script_prefix  # part of the cache's key: reverse() reads it
    names = ("progress", "resume", "pause", "retry", "cancel")
    return {name: reverse(f"jobs:{name}", args=[public_id]) for name in names}


def context(job: Job, *, announce: str = "") -> dict[str, Any]:
    """The partial's context (the job page's too). Now is read here, once: the template shows
    figures of time (`duration`, the ETA) from it, never from a clock of its own."""
    now = timezone.now()
    rate = progress.recent_rate(job, now.timestamp())
    eta_in = progress.eta(job, rate, now.timestamp())
    worked = job.worked(now)
    average_rate = progress.average_rate(job, worked) if job.is_terminal else None
    processed = progress.processed(job)
    percent = progress.percent_processed(job)
    return {
        "job": job,
        "stages": progress.stages(job),
        "status_label": progress.status_label(job),
        "segments": progress.segments(job),
        "controls": controls(job),
        "counts": job.counts,
        "processed": processed,
        "figures": progress.figures(job, processed),
        "percent": percent,
        "percent_whole": int(percent),  # the tab's title: cut, as the percent is
        "rate": rate,
        "average_rate": average_rate,
        "eta": (now + eta_in) if eta_in else None,
        "eta_in": eta_in,
        "duration": worked,
        "waiting_for": progress.waiting_for(job, now, rate),
        # A finished job's chart states the same average as its counters.
        "chart": charts.throughput_svg(
            _chart_samples(job),
            average=(average_rate, worked.total_seconds()) if average_rate and worked else None,
        ),
        "seen": _seen(job),
        "announce": announce,
        "poll_every": "1s",
        "polling": progress.still_moving(job),
        "urls": _urls(get_script_prefix(), job.public_id),
    }


@dataclass(frozen=True, slots=True)
class _Fragment:
    """A rendered partial and what each answer needs to know of its job."""

    owner_id: int
    expires_at: datetime | None
    html: str
    status: str
    done: int
    failed: int
    last_event_id: int
    active: bool


def _fragment(job: Job, *, announce: str = "", action_error: str = "") -> _Fragment:
    data = context(job, announce=announce)
    data["action_error"] = action_error
    data["token_in_header"] = True  # the forms post through htmx (templates/jobs/detail.html)
    html = get_template(TEMPLATE).render(data)
    return _Fragment(
        job.owner_id,
        job.expires_at,
        html,
        job.status,
        job.done,
        job.failed,
        last_event_id(job),
        progress.still_moving(job),
    )


def _announce(job: Job, seen: tuple[str, int, int | None] | None) -> str:
    if seen and seen[0] != job.status:
        if job.status == JobStatus.PARTIAL:
            return f"Job finished: {progress.status_label(job).lower()}."
        return f"Job {job.get_status_display().lower()}."
    return ""


def _respond(fragment: _Fragment, seen: tuple | None, *, polling: bool) -> HttpResponse:
    response = HttpResponse(fragment.html)
    # The rest of the page reloads on these events instead of polling (templates/jobs/detail.html):
    # the timeline and the results on "job-changed" (a new status or timeline entry), the results
    # alone on "job-progressed" (more rows done), and only while their first rows can still change;
    # the failed-rows downloads and reasons on "job-failed", else they would deny rows failing
    # under the counters' eyes until the job ends.
    if seen:
        status, done, event, failed = seen
        if status != fragment.status or (event is not None and event != fragment.last_event_id):
            response["HX-Trigger"] = "job-changed"
        else:
            events = []
            if done != fragment.done:
                events.append("job-progressed")
            if failed is not None and failed != fragment.failed:
                events.append("job-failed")
            if events:
                response["HX-Trigger"] = ", ".join(events)
    if polling and not fragment.active:
        response.status_code = STOP_POLLING
        if response.has_header("HX-Trigger"):
            # The last answer: everything reloads once. "job-failed" alone may fall in the
            # downloads' throttle and be dropped, and no later answer would bring it again
            # (a cancelled job's last rows come back with its status unchanged).
            response["HX-Trigger"] = "job-changed"
    return response


def response(
    request: HttpRequest, job: Job, *, polling: bool, announce: str = "", action_error: str = ""
) -> HttpResponse:
    """The partial for `job` as just read (after an action, or from the database): no memo."""
    seen = parse_seen(request.GET.get("seen", ""))
    fragment = _fragment(job, announce=announce or _announce(job, seen), action_error=action_error)
    return _respond(fragment, seen, polling=polling)


def poll(request: HttpRequest, public_id: str) -> HttpResponse:
    """The poll's answer: from the job's live status when it answers for this user (the
    fragment made in this second for the same key, else a new one), else from the database."""
    user = request.user
    stored = page_live(request, public_id)
    if stored is not None:
        response = live_answer(request, user, public_id, stored)
        if response is not None:
            return response
    # Another user's job, or a job the key cannot answer: the database decides (a 404).
    seen = parse_seen(request.GET.get("seen", ""))
    job = services.get_job(user, public_id, last_event=True)
    fragment = _fragment(job, announce=_announce(job, seen))
    return _respond(fragment, seen, polling=True)


def live_answer(
    request: HttpRequest, user: Any, public_id: str, stored: tuple[int, str]
) -> HttpResponse | None:
    """The poll's answer for `user` (anything with their `pk`) from the job's live status
    `stored`, read as livestatus.current allows: the fragment made in this second for the same
    key, else a new one kept for the rest of the second. None: the key does not answer for this
    user (someone else's job, expired, written by other code); the database decides."""
    seen = parse_seen(request.GET.get("seen", ""))
    second = second_memo.current_second()
    key = (public_id, stored, second, seen[0] if seen else None, get_script_prefix(), user.pk)
    fragment = _memo.get(key, second)
    if fragment is not None and (
        fragment.owner_id != user.pk
        or (fragment.expires_at is not None and fragment.expires_at <= timezone.now())
    ):
        fragment = None
    if fragment is None:
        job = livestatus.read(user, public_id, stored)
        if job is None:
            return None
        fragment = _fragment(job, announce=_announce(job, seen))
        _memo.put(key, fragment, second)
    return _respond(fragment, seen, polling=True)


def clear() -> None:
    _memo.clear()
