"""The job page's live part (templates/jobs/detail.html, partial "progress"), written without the
template engine for the poll that asks for it every second.

Rendering that fragment through Django's template engine was the largest share of a poll's CPU
(docs/performance.md): each of its ~150 variables and tags is resolved through the engine's
lookup machinery. Here the same HTML is built from the same context (views._progress_context)
with the same value formatting (Django's localize, escaping and `date` filter). The template
stays the reference and the full page's renderer: tests/views/test_progress_html.py checks that
both give the same bytes for jobs in every state, so a change to one that is not made to the
other fails there.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.middleware.csrf import get_token
from django.template.base import render_value_in_context
from django.template.context import Context
from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import floatformat
from django.utils.html import conditional_escape, escape
from django.utils.timezone import template_localtime

from .templatetags.jobs_tags import duration, rate

# What the engine's `{{ value }}` does to a value, with a template's default context settings.
_PLAIN = Context(autoescape=True, use_l10n=None, use_tz=None)


def _v(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return escape(value)
    if kind is int and not settings.USE_THOUSAND_SEPARATOR:
        return str(value)  # what localize() makes of an int without grouping
    return render_value_in_context(value, _PLAIN)


def _date(value: Any, fmt: str) -> str:
    return conditional_escape(date_filter(template_localtime(value), fmt))


def _csrf_input(request) -> str:
    token = get_token(request)
    if not token or token == "NOTPROVIDED":
        return ""
    return f'<input type="hidden" name="csrfmiddlewaretoken" value="{conditional_escape(token)}">'


def render(request, context: dict[str, Any]) -> str:
    """The fragment `{% partialdef progress %}` renders for `context`."""
    job, counts, urls = context["job"], context["counts"], context["urls"]
    out: list[str] = []
    w = out.append
    cancelled = counts["cancelled"]
    w(
        '\n<section id="progress" class="panel live" aria-labelledby="progress-title" '
        f'data-status="{_v(job.status)}"\n'
        f'  data-job="{_v(job.public_id)}" data-name="{_v(job)}" '
        f'data-percent="{_v(floatformat(context["percent"], 0))}" '
        f'data-status-label="{_v(job.get_status_display())}"\n'
        f'  data-summary="{_v(counts["succeeded"])} succeeded, {_v(counts["failed"])} failed'
    )
    if cancelled:
        w(f", {_v(cancelled)} cancelled")
    w(f' of {_v(job.total)} rows."\n  ')
    if job.is_active:
        w(
            f'hx-get="{_v(urls["progress"])}?seen={_v(context["seen"])}" '
            f'hx-trigger="every {_v(context["poll_every"])}" hx-swap="outerHTML"'
        )
    w(
        ">\n"
        '  <div class="section-head">\n'
        '    <h2 id="progress-title">Progress</h2>\n'
        f'    <span class="badge badge-{_v(job.status)}" data-testid="status">'
        f"{_v(job.get_status_display())}</span>\n"
        "  </div>\n"
        "\n"
        '  <ol class="stepper" aria-label="Stages">\n    '
    )
    for stage in context["stages"]:
        state = _v(stage["state"])
        current = ' aria-current="step"' if stage["current"] else ""
        w(
            f'\n      <li class="step step-{state}" data-stage="{_v(stage["key"])}" '
            f'data-state="{state}"{current}>\n'
            '        <span class="dot" aria-hidden="true"></span>\n'
            f'        <span class="step-label">{_v(stage["label"])}</span>\n        '
        )
        if stage["note"]:
            w(f'<span class="step-note">{_v(stage["note"])}</span>')
        w("\n        ")
        if not stage["current"] and not stage["note"]:
            done = "to do" if stage["state"] == "todo" else "done"
            w(f'<span class="visually-hidden">({done})</span>')
        w("\n      </li>\n    ")
    processed, percent = _v(context["processed"]), _v(context["percent"])
    w(
        "\n  </ol>\n"
        "\n"
        '  <div class="bar">\n'
        '    <label for="job-progress" class="visually-hidden">Rows processed</label>\n'
        '    <progress id="job-progress" class="visually-hidden" '
        f'max="{_v(job.total or 1)}" value="{processed}">{percent}%</progress>\n'
        "    \n"
        '<svg class="segbar" viewBox="0 0 100 4" preserveAspectRatio="none" aria-hidden="true" '
        'focusable="false" data-testid="segbar">\n'
        '  <rect class="seg-track" x="0" y="0" width="100" height="4"></rect>\n  '
    )
    for seg in context["segments"]:
        if seg.rows:
            w(
                f'<rect class="seg seg-{_v(seg.key)}" data-segment="{_v(seg.key)}" '
                f'data-rows="{_v(seg.rows)}" x="{_v(f"{seg.offset:.2f}")}" y="0" '
                f'width="{_v(f"{seg.percent:.2f}")}" height="4"></rect>'
            )
    w(
        "\n</svg>\n\n"
        '    <p class="bar-text" data-testid="bar-text"><strong data-testid="done">'
        f'{processed}</strong> of <strong data-testid="total">{_v(job.total)}</strong> '
        f"rows processed ({percent}%)"
    )
    if cancelled:
        w(
            f'; <strong data-testid="cancelled-count">{_v(cancelled)}</strong> '
            "cancelled before they ran"
        )
    w('</p>\n    <ul class="seg-legend" aria-label="Rows by state">\n      ')
    for seg in context["segments"]:
        w(
            f'<li><span class="swatch seg-{_v(seg.key)}" aria-hidden="true"></span>'
            f'{_v(seg.label)} <strong data-testid="{_v(seg.key)}">{_v(seg.rows)}</strong></li>'
        )
    w("\n    </ul>\n  </div>\n\n  ")
    if context["waiting_for"]:
        w(f'<p class="notice waiting" data-testid="waiting-for">{_v(context["waiting_for"])}</p>')
    w('\n\n  <dl class="counters">\n    ')
    if job.is_terminal:
        average = context["average_rate"]
        w(
            "\n      "
            '<div class="counter"><dt>Duration</dt><dd data-testid="duration">'
            f"{_v(duration(job.duration))}</dd></div>\n"
            '      <div class="counter"><dt>Average rate</dt><dd data-testid="average-rate">'
            + (f"{_v(rate(average))} rows/s" if average is not None else "—")
            + "</dd></div>\n    "
        )
    else:
        eta = context["eta"]
        w(
            "\n      "
            '<div class="counter"><dt>In flight</dt><dd data-testid="in-flight">'
            f"{_v(counts['running'])}</dd></div>\n"
            '      <div class="counter"><dt>Rows / s</dt><dd data-testid="rate">'
            + (_v(rate(context["rate"])) if context["rate"] is not None else "—")
            + "</dd></div>\n"
            '      <div class="counter"><dt>ETA</dt><dd data-testid="eta">'
        )
        if eta:
            w(
                f'<time datetime="{_date(eta, "c")}" title="{_date(eta, "Y-m-d H:i:s")} UTC">'
                f"in {_v(duration(context['eta_in']))}</time>"
            )
        else:
            w("—")
        w(
            "</dd></div>\n"
            '      <div class="counter"><dt>Running for</dt><dd>'
            f"{_v(duration(job.duration))}</dd></div>\n    "
        )
    w("\n  </dl>\n\n  ")
    if job.status == "paused" and job.pause_reason:
        w(
            '\n    <p class="notice" data-testid="pause-reason"><strong>Paused:</strong> '
            f"{_v(job.pause_reason)}"
        )
        if job.resume_at:
            w(
                f' It resumes by itself at <time datetime="{_date(job.resume_at, "c")}">'
                f"{_date(job.resume_at, 'H:i')} UTC</time>."
            )
        w("</p>\n  ")
    w("\n  ")
    error = job.error
    if error:
        w(
            '\n    <div class="message error" data-testid="job-error"><strong>'
            f"{_v(error['code'])}</strong>: {_v(error['message'])}</div>\n  "
        )
    w("\n  ")
    if context.get("action_error"):
        w(f'<p class="message error" role="alert">{_v(context["action_error"])}</p>')
    w("\n\n  ")
    controls = context["controls"]
    if controls["pause"] or controls["resume"] or controls["cancel"] or controls["retry"]:
        csrf = _csrf_input(request)
        w('\n  <div class="controls" role="group" aria-label="Job controls">\n    ')
        if controls["resume"]:
            w(
                _form(
                    urls["resume"],
                    csrf,
                    'id="btn-resume" type="submit" class="button primary"',
                    "Resume",
                )
            )
        w("\n    ")
        if controls["pause"]:
            w(_form(urls["pause"], csrf, 'id="btn-pause" type="submit" class="button"', "Pause"))
        w("\n    ")
        if controls["retry"]:
            w(
                _form(
                    urls["retry"],
                    csrf,
                    'id="btn-retry" type="submit" class="button"',
                    "Retry failed rows",
                )
            )
        w("\n    ")
        if controls["cancel"]:
            w(
                "\n      \n"
                f'      <form method="post" action="{_v(urls["cancel"])}" '
                f'hx-post="{_v(urls["cancel"])}" hx-target="#progress" hx-swap="outerHTML"\n'
                '            hx-vals=\'{"confirm": "yes"}\' '
                'hx-confirm="Cancel this job? Rows not started yet will not run.">\n'
                f'        {csrf}<button id="btn-cancel" type="submit" class="button danger">'
                "Cancel job</button>\n"
                "      </form>\n    "
            )
        w("\n  </div>\n  ")
    w(
        "\n\n"
        '  <div class="chart-wrap">\n'
        "    <h3>Throughput</h3>\n"
        f"    {_v(context['chart'])}\n"
        "  </div>\n"
        '  <p class="muted small">\n    '
    )
    if job.started_at:
        w(
            f'Started <time datetime="{_date(job.started_at, "c")}">'
            f"{_date(job.started_at, 'Y-m-d H:i:s')}</time> UTC. "
        )
    w("\n    ")
    if job.finished_at:
        w(
            f'Finished <time datetime="{_date(job.finished_at, "c")}">'
            f"{_date(job.finished_at, 'Y-m-d H:i:s')}</time> UTC. "
        )
    w("\n    ")
    if job.expires_at:
        w(
            f'Results are kept until <time datetime="{_date(job.expires_at, "c")}">'
            f"{_date(job.expires_at, 'Y-m-d H:i')}</time> UTC."
        )
    w("\n  </p>\n</section>\n")
    if context.get("announce"):
        w(f'<span hx-swap-oob="innerHTML:#job-announce">{_v(context["announce"])}</span>')
    w("\n")
    return "".join(out)


def _form(url: str, csrf: str, button: str, label: str) -> str:
    return (
        f'\n      <form method="post" action="{_v(url)}" hx-post="{_v(url)}" '
        'hx-target="#progress" hx-swap="outerHTML">\n'
        f"        {csrf}<button {button}>{label}</button>\n"
        "      </form>\n    "
    )
