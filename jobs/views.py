"""The dashboard's HTML views: jobs list, new job, job detail, their live partials and actions.

Views stay thin: every read and action goes through jobs.services (the API calls the same
functions), and a job URL always starts with services.get_job, so another user's job is a 404.
Every page works without JavaScript; with htmx the same views answer partial requests
(``request.htmx``) and polling partials return HTTP 286 once there is nothing left to watch.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from batchhub.api import APIError

from . import charts, drafts, estimate, failures, progress, rerun, results, services, states
from .downloads import results_response
from .forms import ColumnMapForm, JobForm, ParamsForm, UploadForm, attach_api_errors
from .models import Job, JobStatus, RowStatus
from .processors import ParamsError, all_processors, get_processor_class
from .sample import run_sample
from .upload import UploadLimit, guard_upload, too_large

PAGE_SIZE = 25
PREVIEW_RESULTS = 50
FINAL_ROW_STATUSES = frozenset({RowStatus.SUCCEEDED, RowStatus.FAILED, RowStatus.CANCELLED})
SAMPLE_ROWS = 10
# HTTP 286 tells htmx to stop polling (https://htmx.org/docs/#polling).
STOP_POLLING = 286

STATUS_FILTERS = [("", "All"), ("active", "Active"), *[(s.value, s.label) for s in JobStatus]]


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
        "q": search,
        "filtered": bool(status or processor or search),
        "status_filters": STATUS_FILTERS,
        "processor_filters": processors,
        "filter_error": error,
        "any_active": any(job.is_active for job in jobs),
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
    if not context["any_active"]:
        response.status_code = STOP_POLLING
    return response


# --- job detail ----------------------------------------------------------------------------------


def _controls(job: Job) -> dict[str, bool]:
    return {
        "pause": states.can_transition(job, JobStatus.PAUSED),
        "resume": job.status == JobStatus.PAUSED
        and states.can_transition(job, JobStatus.PROCESSING),
        "cancel": states.can_transition(job, JobStatus.CANCELLED),
        # services.retry takes failed rows of a finished or paused job back to work.
        "retry": job.failed > 0 and (job.is_terminal or job.status == JobStatus.PAUSED),
    }


def _redeliver_url(job: Job) -> str | None:
    """The "send again" button's target: only a finished job with a webhook has one."""
    if not job.webhook_url or not job.is_terminal:
        return None
    return reverse("jobs:webhook-redeliver", args=[job.public_id])


def _last_event_id(job: Job) -> int:
    """The newest timeline entry's id (0 for none): the page reloads its timeline when it moves.

    The page's own reads bring it with the job (services.get_job(..., last_event=True)); a job
    read otherwise (after an action) asks once."""
    if getattr(job, "last_event_id", None) is None:
        job.last_event_id = job.events.order_by("-id").values_list("id", flat=True).first() or 0
    return job.last_event_id


def _seen(job: Job) -> str:
    return f"{job.status}-{job.done}-{_last_event_id(job)}"


def _parse_seen(seen: str) -> tuple[str, int, int | None] | None:
    """What the page showed at its last poll: (status, rows done, newest event id or None).

    A page loaded before the event id was part of it sends "status-done"; None means the
    parameter is missing or mangled, and nothing is announced.
    """
    parts = seen.split("-")
    try:
        if len(parts) == 2:
            return parts[0], int(parts[1]), None
        if len(parts) == 3:
            return parts[0], int(parts[1]), int(parts[2])
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


def _progress_context(job: Job, *, announce: str = "") -> dict[str, Any]:
    rate = progress.recent_rate(job)
    eta_in = progress.eta(job, rate)
    return {
        "job": job,
        "stages": progress.stages(job),
        "segments": progress.segments(job),
        "controls": _controls(job),
        "counts": job.counts,
        "processed": progress.processed(job),
        "percent": progress.percent_processed(job),
        "rate": rate,
        "average_rate": progress.average_rate(job) if job.is_terminal else None,
        "eta": (timezone.now() + eta_in) if eta_in else None,
        "eta_in": eta_in,
        "waiting_for": progress.waiting_for(job),
        "chart": charts.throughput_svg(_chart_samples(job)),
        "seen": _seen(job),
        "announce": announce,
        "poll_every": "1s",
    }


def _preview_rows(job: Job, status: str) -> list[dict[str, Any]]:
    rows = []
    # Closed explicitly: on PostgreSQL the iterator is a COPY that must be cancelled, not drained.
    with contextlib.closing(results.iter_rows(job, status)) as it:
        for index, ref, row_status, data, output, error in itertools.islice(it, PREVIEW_RESULTS):
            rows.append(
                {
                    "number": index + 1,
                    "ref": ref,
                    "status": row_status,
                    "data": list(data or []),
                    "output": output or {},
                    "error": error,
                }
            )
    return rows


def _preview_settled(job: Job, rows: list[dict[str, Any]], failed_only: bool) -> bool:
    """Whether the preview can only change with the job's status (a retry, a cancel, the end).

    Until then it reloads as rows finish. A job of 1M rows finishes its first 50 in a moment,
    and from then on its page asks for the progress alone, once a second.
    """
    if not job.is_active:
        return True
    still_reading = job.status in (JobStatus.QUEUED, JobStatus.VALIDATING)
    if len(rows) < PREVIEW_RESULTS and (failed_only or still_reading):
        return False  # more rows may come: new failures, or rows still being read
    return all(row["status"] in FINAL_ROW_STATUSES for row in rows)


def _results_context(job: Job, failed_only: bool) -> dict[str, Any]:
    rows = _preview_rows(job, "failed" if failed_only else "all")
    outputs = results.output_columns(job)
    for row in rows:
        row["outputs"] = [row["output"].get(name) for name in outputs]
    return {
        "job": job,
        "failed_only": failed_only,
        "result_rows": rows,
        "preview_settled": _preview_settled(job, rows, failed_only),
        "columns": list(job.columns or []),
        "output_columns": outputs,
        "preview_limit": PREVIEW_RESULTS,
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
        **_progress_context(job),
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


def _progress_response(
    request: HttpRequest, job: Job, *, polling: bool, announce: str = "", action_error: str = ""
) -> HttpResponse:
    seen = _parse_seen(request.GET.get("seen", ""))
    if seen and not announce and seen[0] != job.status:
        announce = f"Job {job.get_status_display().lower()}."
    context = _progress_context(job, announce=announce)
    context["action_error"] = action_error
    response = render(request, "jobs/detail.html#progress", context)
    # The rest of the page reloads on these events instead of polling (templates/jobs/detail.html):
    # the timeline and the results on "job-changed" (a new status or timeline entry), the results
    # alone on "job-progressed" (more rows done), and only while their first rows can still change.
    if seen:
        status, done, event = seen
        if status != job.status or (event is not None and event != _last_event_id(job)):
            response["HX-Trigger"] = "job-changed"
        elif done != job.done:
            response["HX-Trigger"] = "job-progressed"
    if polling and not job.is_active:
        response.status_code = STOP_POLLING
    return response


@login_required
@require_GET
def job_progress(request: HttpRequest, public_id: str) -> HttpResponse:
    """The live part of the job page, polled every second while the job is active."""
    job = services.job_status(request.user, public_id)
    return _progress_response(request, job, polling=True)


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


def _act(request: HttpRequest, public_id: str, action: str) -> HttpResponse:
    job = services.get_job(request.user, public_id)
    actor = services.actor_for(request)
    before = job.status
    try:
        if action == "pause":
            job = services.pause(job, actor=actor)
            done = "Job paused."
        elif action == "resume":
            job = services.resume(job, actor=actor)
            done = "Job resumed."
        elif action == "cancel":
            job = services.cancel(job, actor=actor)
            done = "Job cancelled."
        elif action == "retry":
            job = services.retry(job, actor=actor)
            done = "Failed rows sent back to work."
        else:  # pragma: no cover - the URLconf names the actions
            raise Http404
    except APIError as exc:
        if request.htmx:
            job.refresh_from_db()
            response = _progress_response(request, job, polling=False, action_error=str(exc.detail))
            response["HX-Trigger"] = "job-changed"
            return response
        messages.error(request, str(exc.detail))
        return redirect("jobs:detail", job.public_id)
    if request.htmx:
        job.refresh_from_db()
        announce = done if job.status != before or action == "retry" else ""
        response = _progress_response(request, job, polling=False, announce=announce)
        response["HX-Trigger"] = "job-changed"
        return response
    messages.success(request, done)
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


@login_required
@require_http_methods(["GET", "POST"])
def job_cancel(request: HttpRequest, public_id: str) -> HttpResponse:
    """Cancel after a confirmation: htmx asks with hx-confirm, without JS a page asks."""
    job = services.get_job(request.user, public_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        return _act(request, public_id, "cancel")
    return render(
        request,
        "jobs/confirm.html",
        {
            "nav": "jobs",
            "job": job,
            "title": f"Cancel “{job}”?",
            "question": "Rows not started yet will not run. Rows already done keep their results "
            "and stay downloadable.",
            "action_url": reverse("jobs:cancel", args=[job.public_id]),
            "confirm_label": "Cancel job",
            "back_label": "Keep it running",
            "allowed": states.can_transition(job, JobStatus.CANCELLED),
        },
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
    return render(
        request,
        "jobs/confirm.html",
        {
            "nav": "jobs",
            "job": job,
            "title": f"Delete “{job}”?",
            "question": "The job, its input file and all its results are deleted. "
            "This cannot be undone.",
            "action_url": reverse("jobs:delete", args=[job.public_id]),
            "confirm_label": "Delete job",
            "back_label": "Keep it",
            "allowed": True,
        },
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
def job_download(request: HttpRequest, public_id: str, fmt: str) -> StreamingHttpResponse:
    job = services.get_job(request.user, public_id)
    if fmt not in ("csv", "jsonl", "json"):
        raise Http404("No such format.")
    status = request.GET.get("status", "all")
    if status not in results.STATUS_FILTERS:
        status = "all"
    return results_response(job, fmt, status)


# --- new job -------------------------------------------------------------------------------------


def _processor_info(name: str | None) -> dict[str, Any] | None:
    cls = get_processor_class(name or "")
    return cls.describe() if cls is not None else None


def _default_processor(columns: list[str]) -> str:
    names = [cls.name for cls in all_processors()]
    # A processor whose inputs the file already has is the likeliest choice.
    for cls in all_processors():
        if cls.inputs and all(i in columns for i in cls.inputs):
            return cls.name
    return "template" if "template" in names else (names[0] if names else "")


def _processor_forms(
    processor: str | None, draft: drafts.Draft, data: Any = None, *, bind_params: bool = True
) -> tuple[ParamsForm, ColumnMapForm]:
    cls = get_processor_class(processor or "")
    schema = cls.params_schema if cls is not None else {}
    inputs = list(cls.inputs) if cls is not None else []
    preview = list(draft.report.get("preview") or [])
    if data is not None and bind_params:
        return (
            ParamsForm(data, schema=schema),
            ColumnMapForm(data, inputs=inputs, columns=draft.columns, preview=preview),
        )
    # Not bound (first view, or another processor picked): keep what was typed where it still fits.
    initial_params = {}
    initial_map = {}
    if data is not None:
        keys = {k.split("-", 1)[1]: data.get(k) for k in data if k.startswith("param-")}
        initial_params = {k: v for k, v in keys.items() if v not in (None, "")}
        initial_map = {
            k.split("-", 1)[1]: data.get(k) for k in data if k.startswith("map-") and data.get(k)
        }
    return (
        ParamsForm(schema=schema, initial=initial_params),
        ColumnMapForm(inputs=inputs, columns=draft.columns, preview=preview, initial=initial_map),
    )


def _new_context(
    request: HttpRequest,
    draft: drafts.Draft,
    job_form: JobForm,
    params: ParamsForm,
    mapping: ColumnMapForm,
    processor: str | None,
    **extra: Any,
) -> dict[str, Any]:
    report = draft.report
    info = report.get("info") or {}
    return {
        "nav": "new",
        "step": 2,
        "draft": draft,
        "report": report,
        "info": info,
        "delimiter_name": {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}.get(
            info.get("delimiter") or "", info.get("delimiter") or "—"
        ),
        "preview_columns": report.get("columns") or [],
        "preview_rows": [
            [row.get(c) for c in report.get("columns") or []] for row in report.get("preview") or []
        ],
        "form": job_form,
        "params_form": params,
        "map_form": mapping,
        "processor": _processor_info(processor),
        "processor_name": processor or "",
        "estimate": estimate.from_history(request.user, processor, report.get("row_count") or 0)
        if processor
        else None,
        "errors": [],
        "error_message": "",
        **extra,
    }


def _upload_page(
    request: HttpRequest, form: UploadForm, *, status: int = 200, message: str = ""
) -> HttpResponse:
    return render(
        request,
        "jobs/new.html",
        {
            "nav": "new",
            "step": 1,
            "upload_form": form,
            "error_message": message,
            "max_upload": settings.BATCHHUB_MAX_UPLOAD_BYTES,
        },
        status=status,
    )


def _handle_upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _upload_page(request, form, status=400)
    upload = form.cleaned_data["file"]
    token, stored = drafts.create(request.user, upload)
    draft_file = drafts.open_file(request.user, drafts.Draft(token, stored, upload.size, {}))
    try:
        report = services.Source(upload=draft_file).report(max_rows=settings.BATCHHUB_MAX_ROWS)
    except APIError as exc:
        drafts.delete(request.user, token)
        return _upload_page(request, form, status=400, message=str(exc.detail))
    finally:
        draft_file.close()
    if report.row_count == 0:
        # Nothing a job could run: say so once, here, instead of on a preview with a Start button.
        drafts.delete(request.user, token)
        first = report.errors[0] if report.errors else {}
        where = f"Line {first['line']}: " if first.get("line") else ""
        message = f"{where}{first['message']}" if first else "The file has a header but no rows."
        return _upload_page(request, form, status=400, message=f"Nothing to process. {message}")
    drafts.save_report(request.user, token, report)
    # Post/redirect/get: a reload shows the preview again instead of re-sending the file.
    return redirect(f"{reverse('jobs:new')}?draft={token}")


def _upload_too_large(request: HttpRequest, limit: UploadLimit) -> HttpResponse:
    return _upload_page(
        request, UploadForm(), status=413, message=str(too_large(limit.limit).detail)
    )


@login_required
@require_http_methods(["GET", "POST"])
@guard_upload(_upload_too_large)
def new_job(request: HttpRequest) -> HttpResponse:
    if request.upload_limit is not None:
        request.FILES  # noqa: B018 -- parse now: the limit is known only once the body is read
        if request.upload_limit.exceeded:
            return _upload_too_large(request, request.upload_limit)
    if request.method == "POST" and (
        "file" in request.FILES or request.POST.get("action") == "upload"
    ):
        return _handle_upload(request)
    token = request.POST.get("draft") or request.GET.get("draft") or ""
    if not token:
        return _upload_page(request, UploadForm())
    draft = drafts.load(request.user, token)
    if draft is None:
        return _upload_page(
            request,
            UploadForm(),
            status=400 if request.method == "POST" else 200,
            message="That upload is no longer available (drafts are kept for a day). "
            "Please upload the file again.",
        )

    if request.method == "GET":
        source = request.GET.get("from", "")
        if source:
            # "Run again": the earlier job's settings, shown to be checked before Start.
            copied = services.get_job(request.user, source)
            data = rerun.form_data(copied)
            processor = data["processor"]
            job_form = JobForm(initial={"draft": draft.token, **data}, columns=draft.columns)
            params, mapping = _processor_forms(processor, draft, data, bind_params=False)
        else:
            copied = None
            processor = _default_processor(draft.columns)
            job_form = JobForm(
                initial={"draft": draft.token, "processor": processor, "name": draft.filename},
                columns=draft.columns,
            )
            params, mapping = _processor_forms(processor, draft)
        return render(
            request,
            "jobs/new.html",
            _new_context(request, draft, job_form, params, mapping, processor, copied_from=copied),
        )

    action = request.POST.get("action", "start")
    processor = request.POST.get("processor", "")
    # The params fields on the page were built for this processor; another one means a fresh form.
    same_processor = request.POST.get("params_for", processor) == processor
    if action == "update" or not same_processor:
        job_form = JobForm(initial=request.POST.dict(), columns=draft.columns)
        params, mapping = _processor_forms(processor, draft, request.POST, bind_params=False)
        context = _new_context(request, draft, job_form, params, mapping, processor)
        if action == "update":
            return render(request, "jobs/new.html", context)
        context["error_message"] = (
            "You picked another processor: check its settings below, then start again."
        )
        return render(request, "jobs/new.html", context, status=400)

    job_form = JobForm(request.POST, columns=draft.columns)
    params, mapping = _processor_forms(processor, draft, request.POST)
    forms_ok = job_form.is_valid() & params.is_valid() & mapping.is_valid()
    if action == "sample":
        return _sample(request, draft, job_form, params, mapping, processor, forms_ok)
    if not forms_ok:
        context = _new_context(
            request,
            draft,
            job_form,
            params,
            mapping,
            processor,
            error_message="Please correct the fields marked below.",
            field_errors=_field_errors(job_form, params, mapping),
        )
        return render(request, "jobs/new.html", context, status=400)

    data = job_form.cleaned_data
    source_file = drafts.open_file(request.user, draft)
    try:
        job, _created = services.create_job(
            request.user,
            processor=processor,
            params=params.params(),
            source=services.Source(upload=source_file),
            name=data.get("name") or draft.filename,
            id_column=data.get("id_column") or None,
            column_map=mapping.column_map(),
            webhook_url=data.get("webhook_url") or None,
            concurrency=data.get("concurrency"),
            rate_limit=data.get("rate_limit"),
            actor=services.actor_for(request),
        )
    except APIError as exc:
        loose = attach_api_errors(exc.details, job_form=job_form, params=params, mapping=mapping)
        details = exc.details if isinstance(exc.details, dict) else {}
        context = _new_context(
            request,
            draft,
            job_form,
            params,
            mapping,
            processor,
            error_message=str(exc.detail),
            errors=details.get("errors") or [],
            loose_errors=[m for m in loose if m != str(exc.detail)],
        )
        return render(request, "jobs/new.html", context, status=exc.status_code)
    finally:
        source_file.close()
    drafts.delete(request.user, draft.token)
    # No "created" message: the job page itself shows the job, its stage and what it waits for.
    return redirect("jobs:detail", job.public_id)


def _sample(
    request: HttpRequest,
    draft: drafts.Draft,
    job_form: JobForm,
    params: ParamsForm,
    mapping: ColumnMapForm,
    processor: str,
    forms_ok: bool,
) -> HttpResponse:
    sample_rows: list[dict[str, Any]] = []
    sample_seconds = 0.0
    sample_error = ""
    output_names: list[str] = []
    if not forms_ok:
        sample_error = "Please correct the fields marked above first."
    else:
        rows = list(draft.report.get("preview") or [])[:SAMPLE_ROWS]
        started = time.monotonic()
        try:
            outcome = run_sample(
                processor,
                params.params(),
                rows,
                column_map=mapping.column_map(),
                owner_id=request.user.pk,
                limit=SAMPLE_ROWS,
            )
        except APIError as exc:
            sample_error = str(exc.detail)
            attach_api_errors(exc.details, job_form=job_form, params=params, mapping=mapping)
        except ParamsError as exc:
            sample_error = str(exc)
            attach_api_errors(
                {"params": exc.errors or [str(exc)]},
                job_form=job_form,
                params=params,
                mapping=mapping,
            )
        else:
            sample_rows, output_names = _sample_table(outcome, rows)
            sample_seconds = time.monotonic() - started
    field_errors = _field_errors(job_form, params, mapping)
    context = _new_context(
        request,
        draft,
        job_form,
        params,
        mapping,
        processor,
        sample_rows=sample_rows,
        sample_outputs=output_names,
        sample_error=sample_error,
        sample_ran=True,
        sample_columns=_sample_columns(processor, mapping, draft.columns),
        sample_seconds=sample_seconds,
        sample_estimate=_sample_estimate(
            processor, len(sample_rows), sample_seconds, draft, job_form
        ),
        sample_tokens=estimate.tokens(sample_rows, draft.report.get("row_count") or 0),
        field_errors=field_errors,
        # htmx swaps only the sample section: the fields come along to show (or clear) their
        # errors.
        refresh_fields=bool(request.htmx),
    )
    template = "jobs/new.html#sample" if request.htmx else "jobs/new.html"
    return render(
        request, template, context, status=200 if not sample_error or request.htmx else 400
    )


def _sample_estimate(
    processor: str, sample_rows: int, seconds: float, draft: drafts.Draft, job_form: JobForm
) -> estimate.Estimate | None:
    cls = get_processor_class(processor or "")
    if cls is None or not sample_rows:
        return None
    chosen = job_form.cleaned_data.get("concurrency") if hasattr(job_form, "cleaned_data") else None
    return estimate.from_sample(
        draft.report.get("row_count") or 0,
        sample_rows,
        seconds,
        io_bound=cls.io_bound,
        concurrency=chosen or settings.BATCHHUB_DEFAULT_CONCURRENCY,
    )


def _sample_columns(processor: str, mapping: ColumnMapForm, columns: list[str]) -> list[str]:
    """The input columns worth showing beside the outputs: the ones the processor reads."""
    cls = get_processor_class(processor or "")
    if cls is None or not cls.inputs:
        return columns
    chosen = mapping.cleaned_data if hasattr(mapping, "cleaned_data") else {}
    used = [chosen.get(name) or name for name in cls.inputs]
    return [c for c in columns if c in used] or columns


def _field_errors(*forms: Any) -> list[dict[str, str]]:
    """Each field in error as {id, label, message}, to link to it from the message."""
    out = []
    for form in forms:
        if not form.is_bound or not hasattr(form, "cleaned_data"):
            continue
        for name, errors in form.errors.items():
            if name == "__all__" or name not in form.fields:
                continue
            field = form[name]
            out.append({"id": field.id_for_label, "label": field.label, "message": errors[0]})
    return out


def _sample_table(
    outcome: Any, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Normalise run_sample's answer: results as objects or dicts, with output and error."""
    if isinstance(outcome, dict) and "results" in outcome:
        outcome = outcome["results"]
    table: list[dict[str, Any]] = []
    names: list[str] = []
    for i, item in enumerate(outcome or []):
        if isinstance(item, dict) and ("output" in item or "error" in item):
            output, error = item.get("output"), item.get("error")
        elif isinstance(item, dict):
            output, error = item, None
        else:
            output, error = getattr(item, "output", None), getattr(item, "error", None)
        output = (
            output if isinstance(output, dict) else ({} if output is None else {"output": output})
        )
        for key in output:
            if key not in names:
                names.append(key)
        source = (
            item.get("input")
            if isinstance(item, dict) and isinstance(item.get("input"), dict)
            else None
        )
        if source is None:
            source = rows[i] if i < len(rows) else {}
        usage = item.get("usage") if isinstance(item, dict) else None
        table.append(
            {"number": i + 1, "input": source, "output": output, "error": error, "usage": usage}
        )
    for row in table:
        row["cells"] = [row["output"].get(n) for n in names]
    return table, names


@login_required
@require_GET
def new_job_params(request: HttpRequest) -> HttpResponse:
    """The processor-dependent part of the new-job form, swapped in when the processor changes."""
    draft = drafts.load(request.user, request.GET.get("draft", ""))
    if draft is None:
        raise Http404("No such upload.")
    processor = request.GET.get("processor", "")
    params, mapping = _processor_forms(processor, draft)
    context = _new_context(
        request, draft, JobForm(columns=draft.columns), params, mapping, processor
    )
    return render(request, "jobs/new.html#processor-fields", context)
