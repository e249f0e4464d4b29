"""The new-job page: upload a file, check its preview, pick a processor, try it, start the job.

One path through it: the upload becomes a draft (drafts.from_upload), NewJobForm owns every
field of step 2 and validates them in one call, and the draft becomes a job (drafts.start_job)
or runs a sample of its first rows (run_sample). Without JavaScript every step is a full page;
with htmx the processor's fields and the sample are swapped in as partials.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from batchhub.api import APIError

from . import drafts, estimate, rerun, services
from .forms import NewJobForm, UploadForm
from .processors import ParamsError
from .sample import run_sample
from .upload import UploadLimit, guard_upload, too_large

SAMPLE_ROWS = 10
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


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


def _upload_too_large(request: HttpRequest, limit: UploadLimit) -> HttpResponse:
    return _upload_page(
        request, UploadForm(), status=413, message=str(too_large(limit.limit).detail)
    )


def _upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _upload_page(request, form, status=400)
    try:
        draft = drafts.from_upload(request.user, form.cleaned_data["file"])
    except APIError as exc:
        # A gzip that inflates past the limit is a 413, as an upload over the size limit is.
        return _upload_page(request, form, status=exc.status_code, message=str(exc.detail))
    # Post/redirect/get: a reload shows the preview again instead of re-sending the file.
    return redirect(f"{reverse('jobs:new')}?draft={draft.token}")


def _context(
    request: HttpRequest, draft: drafts.Draft, form: NewJobForm, **extra: Any
) -> dict[str, Any]:
    report = draft.report
    info = report.get("info") or {}
    columns = report.get("columns") or []
    delimiter = info.get("delimiter") or ""
    rows = report.get("row_count") or 0
    cls = form.processor_class
    return {
        "nav": "new",
        "step": 2,
        "draft": draft,
        "report": report,
        "info": info,
        "delimiter_name": DELIMITER_NAMES.get(delimiter, delimiter or "—"),
        "preview_columns": columns,
        "preview_rows": [[row.get(c) for c in columns] for row in report.get("preview") or []],
        "form": form.job,
        "params_form": form.params,
        "map_form": form.mapping,
        "processor": cls.describe() if cls is not None else None,
        "processor_name": form.processor,
        "estimate": estimate.from_history(request.user, form.processor, rows)
        if form.processor
        else None,
        "errors": [],
        "error_message": "",
        **extra,
    }


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
        return _upload(request)
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
        # "Run again" (?from=): the earlier job's settings, shown to be checked before Start.
        source = request.GET.get("from", "")
        copied = services.get_job(request.user, source) if source else None
        form = NewJobForm.first_view(draft, rerun.form_data(copied) if copied else None)
        return render(request, "jobs/new.html", _context(request, draft, form, copied_from=copied))

    action = request.POST.get("action", "start")
    form = NewJobForm.from_post(draft, request.POST)
    if not form.is_bound:
        context = _context(request, draft, form)
        if action == "update":
            return render(request, "jobs/new.html", context)
        context["error_message"] = (
            "You picked another processor: check its settings below, then start again."
        )
        return render(request, "jobs/new.html", context, status=400)

    valid = form.is_valid()
    if action == "sample":
        return _sample(request, draft, form, valid)
    if not valid:
        context = _context(
            request,
            draft,
            form,
            error_message="Please correct the fields marked below.",
            field_errors=form.field_errors(),
        )
        return render(request, "jobs/new.html", context, status=400)
    try:
        job = drafts.start_job(
            request.user, draft, actor=services.actor_for(request), **form.job_arguments()
        )
    except APIError as exc:
        loose = form.add_errors(exc.details)
        details = exc.details if isinstance(exc.details, dict) else {}
        message = str(exc.detail)
        # The file's own problems are listed once, in the preview's box of them.
        shown = draft.report.get("errors") or []
        errors = [e for e in details.get("errors") or [] if e not in shown]
        if details.get("errors") and not errors:
            message = "This file cannot become a job: see the problems in the file below."
        context = _context(
            request,
            draft,
            form,
            error_message=message,
            errors=errors,
            loose_errors=[m for m in loose if m != str(exc.detail)],
        )
        return render(request, "jobs/new.html", context, status=exc.status_code)
    # No "created" message: the job page itself shows the job, its stage and what it waits for.
    return redirect("jobs:detail", job.public_id)


def _sample(
    request: HttpRequest, draft: drafts.Draft, form: NewJobForm, valid: bool
) -> HttpResponse:
    results: list[dict[str, Any]] = []
    seconds = 0.0
    error = ""
    if not valid:
        error = "Please correct the fields marked above first."
    else:
        rows = list(draft.report.get("preview") or [])[:SAMPLE_ROWS]
        started = time.monotonic()
        try:
            results = run_sample(
                rows=rows,
                owner_id=request.user.pk,
                limit=SAMPLE_ROWS,
                columns=list(draft.report.get("columns") or []),
                **form.sample_arguments(),
            )
        except ParamsError as exc:
            error = str(exc)
            form.add_errors({"params": exc.errors or [str(exc)]})
        else:
            seconds = time.monotonic() - started
    row_count = draft.report.get("row_count") or 0
    cls = form.processor_class
    context = _context(
        request,
        draft,
        form,
        sample_rows=results,
        # Every output name any row gave, in the order they first appear.
        sample_outputs=list(dict.fromkeys(k for r in results for k in r["output"] or {})),
        sample_error=error,
        sample_ran=True,
        sample_columns=form.sample_columns(),
        sample_seconds=seconds,
        sample_estimate=estimate.from_sample(
            row_count, len(results), seconds, io_bound=cls.io_bound, concurrency=form.concurrency
        )
        if results
        else None,
        sample_tokens=estimate.tokens(results, row_count),
        field_errors=form.field_errors(),
        # htmx swaps only the sample section: the fields come along to show (or clear) errors.
        refresh_fields=bool(request.htmx),
    )
    template = "jobs/new.html#sample" if request.htmx else "jobs/new.html"
    return render(request, template, context, status=200 if not error or request.htmx else 400)


@login_required
@require_GET
def new_job_params(request: HttpRequest) -> HttpResponse:
    """The processor-dependent part of the new-job form, swapped in when the processor changes."""
    draft = drafts.load(request.user, request.GET.get("draft", ""))
    if draft is None:
        raise Http404("No such upload.")
    form = NewJobForm(draft, request.GET.get("processor", ""))
    return render(request, "jobs/new.html#processor-fields", _context(request, draft, form))
