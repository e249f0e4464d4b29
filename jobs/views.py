"""The dashboard's HTML views: jobs list, job detail, their live partials and actions.

The new-job page is jobs/new_job_views.py; the account pages are the accounts app.

Views stay thin: every read and action goes through jobs.services (the API calls the same
functions), and a job URL always starts with services.get_job, so another user's job is a 404.
Every page works without JavaScript; with htmx the same views answer partial requests
(``request.htmx``) and polling partials return HTTP 286 once there is nothing left to watch.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from batchhub.api import APIError

from . import (
    failures,
    poll,
    preview,
    progress,
    progress_fragment,
    rerun,
    results,
    services,
    states,
)
from .downloads import results_response
from .models import Job, JobStatus
from .processors import all_processors

PAGE_SIZE = 25
STOP_POLLING = progress_fragment.STOP_POLLING

# "partial" is never a badge: the pages say "Completed with failures" or "Every row failed".
_FILTER_LABELS = {JobStatus.PARTIAL: "Finished with failed rows"}
STATUS_FILTERS = [
    ("", "All"),
    ("active", "Active"),
    *[(s.value, _FILTER_LABELS.get(s, s.label)) for s in JobStatus],
]


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a missing job and another user's job look exactly the same."""
    return render(request, "404.html", {}, status=404)


# --- jobs list -----------------------------------------------------------------------------------


def _list_context(request: HttpRequest) -> dict[str, Any]:
    status = request.GET.get("status", "")
    processor = request.GET.get("processor", "")
    search = request.GET.get("q", "").strip()[:200]
    processors = [(cls.name, cls.title or cls.name) for cls in all_processors()]
    if processor not in {name for name, _ in processors}:
        processor = ""
    error = ""
    try:
        qs = services.list_jobs(request.user, status=status or None, processor=processor or None)
    except APIError as exc:
        error, status = str(exc.detail), ""
        qs = services.list_jobs(request.user, processor=processor or None)
    if search:
        qs = qs.filter(name__icontains=search)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    jobs = list(page.object_list)
    for job in jobs:
        job.segments = progress.segments(job)
        job.processed = progress.processed(job)
        job.percent = progress.percent_processed(job)
        job.status_label = progress.status_label(job)
    query = {k: v for k, v in (("q", search), ("status", status), ("processor", processor)) if v}
    filter_query = urlencode(query)
    if page.number > 1:
        query["page"] = page.number
    return {
        "nav": "jobs",
        "page": page,
        "jobs": jobs,
        "status": status,
        "processor": processor,
        # The words of the filters the user picked, for "No jobs match": not the raw values.
        "status_label": dict(STATUS_FILTERS).get(status, status),
        "processor_label": dict(processors).get(processor, processor),
        "q": search,
        "filtered": bool(status or processor or search),
        "status_filters": STATUS_FILTERS,
        "processor_filters": processors,
        "filter_error": error,
        "any_active": any(job.is_active for job in jobs),
        # A cancelled job's rows in a request at the cancel still finish: watched till they do.
        "any_moving": any(progress.still_moving(job) for job in jobs),
        "rows_query": urlencode(query),
        "filter_query": filter_query,
    }


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    return render(
        request, "jobs/list.html", context, status=400 if context["filter_error"] else 200
    )


@login_required
@require_GET
def list_rows(request: HttpRequest) -> HttpResponse:
    """The table body of the jobs list, polled while any job on the page is active."""
    context = _list_context(request)
    response = render(request, "jobs/list.html#rows", context)
    if not context["any_moving"]:
        response.status_code = STOP_POLLING
    return response


# --- job detail ----------------------------------------------------------------------------------


def _redeliver_url(job: Job) -> str | None:
    """The "send again" button's target: only a finished job with a webhook has one."""
    if not job.webhook_url or not job.is_terminal:
        return None
    return reverse("jobs:webhook-redeliver", args=[job.public_id])


def _results_context(job: Job, failed_only: bool) -> dict[str, Any]:
    rows = preview.first_rows(job, "failed" if failed_only else "all")
    outputs = results.output_columns(job)
    for row in rows:
        row["outputs"] = [row["output"].get(name) for name in outputs]
    return {
        "job": job,
        "failed_only": failed_only,
        "result_rows": rows,
        "preview_settled": preview.settled(job, rows, failed_only),
        "columns": list(job.columns or []),
        "output_columns": outputs,
        "preview_limit": preview.LIMIT,
    }


def _events(job: Job) -> list[Any]:
    return list(job.events.order_by("-at", "-id")[:100])


def _downloads_context(job: Job) -> dict[str, Any]:
    reasons, other = failures.reasons(job)
    return {
        "job": job,
        "downloads": [("csv", "CSV"), ("jsonl", "JSONL"), ("json", "JSON")],
        "failure_reasons": reasons,
        "other_failures": other,
    }


def _detail_context(job: Job, failed_only: bool) -> dict[str, Any]:
    return {
        "nav": "jobs",
        **progress_fragment.context(job),
        **_results_context(job, failed_only),
        **_downloads_context(job),
        "events": _events(job),
        "redeliver_url": _redeliver_url(job),
    }


@login_required
@require_GET
def job_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    job = services.get_job(request.user, public_id, last_event=True)
    failed_only = request.GET.get("failed") == "1"
    return render(request, "jobs/detail.html", _detail_context(job, failed_only))


def _page_poll_reads_in_one_trip(view):
    # Outside login_required: the session is read with the job's live status, before the user.
    @functools.wraps(view)
    def wrapper(request: HttpRequest, public_id: str) -> HttpResponse:
        poll.prefetch_page(request, public_id)
        return view(request, public_id)

    return wrapper


@_page_poll_reads_in_one_trip
@login_required
@require_GET
def job_progress(request: HttpRequest, public_id: str) -> HttpResponse:
    """The live part of the job page, polled every second while the job is active."""
    return progress_fragment.poll(request, public_id)


@login_required
@require_GET
def job_rows(request: HttpRequest, public_id: str) -> HttpResponse:
    """The results preview table (first 50 rows; all or failed only)."""
    job = services.get_job(request.user, public_id)
    failed_only = request.GET.get("failed") == "1"
    if not request.htmx:
        return redirect(
            reverse("jobs:detail", args=[job.public_id]) + ("?failed=1" if failed_only else "")
        )
    return render(request, "jobs/detail.html#results", _results_context(job, failed_only))


@login_required
@require_GET
def job_downloads(request: HttpRequest, public_id: str) -> HttpResponse:
    """The downloads and failure reasons, reloaded when the job changes (e.g. it finishes)."""
    job = services.get_job(request.user, public_id)
    if not request.htmx:
        return redirect("jobs:detail", job.public_id)
    return render(request, "jobs/detail.html#downloads", _downloads_context(job))


@login_required
@require_GET
def job_events(request: HttpRequest, public_id: str) -> HttpResponse:
    job = services.get_job(request.user, public_id)
    if not request.htmx:
        return redirect("jobs:detail", job.public_id)
    return render(
        request,
        "jobs/detail.html#timeline",
        {"job": job, "events": _events(job), "redeliver_url": _redeliver_url(job)},
    )


# The page's job buttons: each calls the services function of its name; what the page says after.
ACTIONS = {
    "pause": "Job paused.",
    "resume": "Job resumed.",
    "cancel": "Job cancelled.",
    "retry": "Failed rows sent back to work.",
}


def _act(request: HttpRequest, public_id: str, action: str) -> HttpResponse:
    job = services.get_job(request.user, public_id)
    before = job.status
    error = ""
    try:
        job = getattr(services, action)(job, actor=services.actor_for(request))
    except APIError as exc:
        error = str(exc.detail)
    if request.htmx:
        job.refresh_from_db()
        changed = not error and (job.status != before or action == "retry")
        response = progress_fragment.response(
            request,
            job,
            polling=False,
            announce=ACTIONS[action] if changed else "",
            action_error=error,
        )
        response["HX-Trigger"] = "job-changed"
        return response
    if error:
        messages.error(request, error)
    else:
        messages.success(request, ACTIONS[action])
    return redirect("jobs:detail", job.public_id)


@login_required
@require_POST
def job_pause(request: HttpRequest, public_id: str) -> HttpResponse:
    return _act(request, public_id, "pause")


@login_required
@require_POST
def job_resume(request: HttpRequest, public_id: str) -> HttpResponse:
    return _act(request, public_id, "resume")


@login_required
@require_POST
def job_retry(request: HttpRequest, public_id: str) -> HttpResponse:
    return _act(request, public_id, "retry")


def _confirm(request: HttpRequest, job: Job, action: str, **texts: Any) -> HttpResponse:
    """The page that asks before a cancel or a delete, for browsers without JavaScript."""
    return render(
        request,
        "jobs/confirm.html",
        {"nav": "jobs", "job": job, "action_url": reverse(f"jobs:{action}", args=[job.public_id])}
        | texts,
    )


@login_required
@require_http_methods(["GET", "POST"])
def job_cancel(request: HttpRequest, public_id: str) -> HttpResponse:
    """Cancel after a confirmation: htmx asks with hx-confirm, without JS a page asks."""
    job = services.get_job(request.user, public_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        return _act(request, public_id, "cancel")
    return _confirm(
        request,
        job,
        "cancel",
        title=f"Cancel “{job}”?",
        question="Rows not started yet will not run. Rows already done keep their results "
        "and stay downloadable.",
        confirm_label="Cancel job",
        back_label="Keep it running",
        allowed=states.can_transition(job, JobStatus.CANCELLED),
    )


@login_required
@require_http_methods(["GET", "POST"])
def job_delete(request: HttpRequest, public_id: str) -> HttpResponse:
    job = services.get_job(request.user, public_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        name = str(job)
        services.delete(job, actor=services.actor_for(request))
        messages.success(request, f"Deleted “{name}” and its results.")
        return redirect("jobs:list")
    return _confirm(
        request,
        job,
        "delete",
        title=f"Delete “{job}”?",
        question="The job, its input file and all its results are deleted. This cannot be undone.",
        confirm_label="Delete job",
        back_label="Keep it",
        allowed=True,
    )


@login_required
@require_POST
def job_again(request: HttpRequest, public_id: str) -> HttpResponse:
    """Run again: the job's file becomes a new draft, and the new-job page opens filled in."""
    job = services.get_job(request.user, public_id)
    try:
        token = rerun.draft_from(request.user, job)
    except APIError as exc:
        messages.error(request, str(exc.detail))
        return redirect("jobs:detail", job.public_id)
    return redirect(f"{reverse('jobs:new')}?{urlencode({'draft': token, 'from': job.public_id})}")


@login_required
@require_GET
def job_download(
    request: HttpRequest, public_id: str, fmt: str
) -> HttpResponse | StreamingHttpResponse:
    job = services.get_job(request.user, public_id)
    if fmt not in ("csv", "jsonl", "json"):
        raise Http404("No such format.")
    # An empty ?status= is the default; any other unknown value is refused, not read as "all",
    # so a mistyped "failed" link never hands over every row as if it were the failed ones.
    status = request.GET.get("status") or "all"
    if status not in results.STATUS_FILTERS:
        allowed = ", ".join(results.STATUS_FILTERS)
        return HttpResponse(
            f"Unknown status {status[:40]!r}: use one of {allowed}.\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    return results_response(job, fmt, status)
