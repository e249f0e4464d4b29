"""The dashboard's newer promises through the Django test client: truthful numbers, run again,
failure reasons, filters, refusing non-text uploads, marked fields, estimates, error pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from jobs import drafts, services
from jobs.ingest import loading
from jobs.models import Job, JobStatus
from jobs.processors import RowError
from jobs.processors.template import TemplateProcessor
from tests.conftest import make_job, rows_text, set_published

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _upload(client, content: bytes, name: str = "data.csv"):
    return client.post(
        reverse("jobs:new"), {"file": SimpleUploadedFile(name, content), "action": "upload"}
    )


def test_a_png_renamed_csv_is_refused_at_step_one_with_one_message(client_alice, alice):
    response = _upload(client_alice, b"\x89PNG\r\n\x1a\n" + bytes(500), "photo.csv")
    assert response.status_code == 400
    body = response.content.decode()
    assert body.count("This is a PNG image, not a CSV or JSONL file") == 1
    assert 'aria-current="step">1.' in body
    assert 'data-testid="start"' not in body
    assert not drafts._files(alice, "x" * 24)


def test_a_file_without_rows_is_refused_at_step_one(client_alice):
    response = _upload(client_alice, b"name,text\n")
    assert response.status_code == 400
    body = response.content.decode()
    assert "No job can be made from this file. Line 2: The file has a header but no" in body
    assert 'data-testid="start"' not in body


def test_a_file_that_cannot_be_read_says_so_not_that_it_is_empty(client_alice):
    response = _upload(client_alice, b'name,text\nann,"never closed\nbob,x\n')
    assert response.status_code == 400
    body = response.content.decode()
    assert "No job can be made from this file. Line 2: " in body
    assert "never closed" in body or "quote" in body, body


def test_cancelled_job_does_not_read_as_done(client_alice, alice, run_job):
    job = make_job(alice, "name,text\n" + "".join(f"n{i},t{i}\n" for i in range(50)))
    loading.ingest(job.pk)
    job = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert job.cancelled == 50
    assert '0</strong> of <strong data-testid="total">50</strong> rows processed (0.0%)' in body
    assert '<strong data-testid="cancelled-count">50</strong> cancelled before they ran' in body
    assert 'data-segment="cancelled" data-rows="50"' in body
    assert 'data-stage="finalizing" data-state="skipped"' in body
    assert "100%" not in body and "100.0%" not in body
    assert 'data-testid="duration"' in body and 'data-testid="eta"' not in body


def test_a_partial_job_offers_its_succeeded_rows_alone(client_alice, alice, run_job, monkeypatch):
    # A person feeding the good rows on had to download every row and filter out the failed
    # ones: the page offered "all" and "failed only", the API "succeeded" too.
    original = TemplateProcessor.process_row

    def picky(self, row):
        if row.values["name"].startswith("x"):
            raise RowError("bad input")
        return original(self, row)

    monkeypatch.setattr(TemplateProcessor, "process_row", picky)
    job = run_job(make_job(alice, "name,text\nok1,a\nx1,b\nok2,c\n"))
    assert job.status == JobStatus.PARTIAL
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    link = re.search(r'href="([^"]+)"[^>]*data-testid="download-csv-succeeded"', body)
    assert link and "Succeeded rows only, CSV" in body
    csv_text = b"".join(client_alice.get(link.group(1).replace("&amp;", "&")).streaming_content)
    lines = csv_text.decode().splitlines()
    assert [line.split(",")[0] for line in lines] == ["name", "ok1", "ok2"]
    # Every row succeeded: "all" is already the succeeded rows.
    done = run_job(make_job(alice, "name,text\nok1,a\n"))
    body = client_alice.get(reverse("jobs:detail", args=[done.public_id])).content.decode()
    assert "Succeeded rows only" not in body


def test_failure_reasons_are_counted(client_alice, alice, run_job, monkeypatch):
    original = TemplateProcessor.process_row

    def picky(self, row):
        name = row.values["name"]
        if name.startswith("q"):
            raise RowError("quota exceeded")
        if name.startswith("x"):
            raise RowError("<b>bad</b> input")
        return original(self, row)

    monkeypatch.setattr(TemplateProcessor, "process_row", picky)
    job = run_job(make_job(alice, "name,text\nq1,a\nq2,b\nx1,c\nok,d\nq3,e\n"))
    assert job.status == JobStatus.PARTIAL and job.failed == 4
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    reasons = re.findall(
        r'<td class="error-text">([^<]*)</td><td class="num">(\d+)</td>',
        body.split('data-testid="failure-reasons"')[1],
    )
    assert reasons == [("quota exceeded", "3"), ("&lt;b&gt;bad&lt;/b&gt; input", "1")]
    assert "?status=failed" in body and "Failed rows only, CSV" in body
    assert reverse("jobs:download", args=[job.public_id, "json"]) in body
    # The section reloads itself when the job changes; alone, it is the same table.
    url = reverse("jobs:downloads", args=[job.public_id])
    assert 'hx-trigger="job-changed from:body"' in body and url in body
    part = client_alice.get(url, **HTMX).content.decode()
    assert part.lstrip().startswith('<section id="downloads"') and "quota exceeded" in part
    assert client_alice.get(url).status_code == 302


def test_run_again_opens_the_form_filled_in(client_alice, alice, client_bob, run_job):
    job = run_job(
        make_job(
            alice,
            "name,text\nann,x\n",
            params={"template": "{name}!", "output_column": "shout"},
            name="first",
            concurrency=3,
            rate_limit=120,
        )
    )
    url = reverse("jobs:again", args=[job.public_id])
    assert client_alice.get(url).status_code == 405  # a GET never writes a draft
    assert client_bob.post(url).status_code == 404
    response = client_alice.post(url)
    assert response.status_code == 302
    assert f"from={job.public_id}" in response["Location"]
    page = client_alice.get(response["Location"]).content.decode()
    assert "Settings copied from" in page
    assert '<option value="template" selected>' in page
    assert "{name}!</textarea>" in page
    assert 'name="param-output_column" value="shout"' in page
    assert 'value="first (again)"' in page
    assert 'name="concurrency" value="3"' in page and 'name="rate_limit" value="120"' in page
    # Another user's job as the source is a 404, even with a draft of one's own.
    token = re.search(r"draft=([\w-]+)", response["Location"]).group(1)
    assert (
        client_bob.get(reverse("jobs:new"), {"draft": token, "from": job.public_id}).status_code
        == 200  # bob has no such draft: the upload page
    )


def test_run_again_without_the_input_file_says_so(client_alice, alice):
    job = make_job(alice, "name,text\nann,x\n")
    job.input_file.delete(save=True)
    response = client_alice.post(reverse("jobs:again", args=[job.public_id]), follow=True)
    assert "no longer kept" in response.content.decode()


def test_jobs_list_search_and_processor_filter(client_alice, alice, bob):
    make_job(alice, "name,text\na,b\n", name="Invoices March")
    make_job(alice, "name,text\na,b\n", name="reviews", processor="sentiment", params={})
    make_job(bob, "name,text\na,b\n", name="invoices of bob")
    body = client_alice.get(reverse("jobs:list"), {"q": "invoice"}).content.decode()
    assert "Invoices March" in body and "reviews" not in body and "of bob" not in body
    body = client_alice.get(reverse("jobs:list"), {"processor": "sentiment"}).content.decode()
    assert "reviews" in body and "Invoices March" not in body
    assert '<option value="sentiment" selected>' in body
    body = client_alice.get(reverse("jobs:list"), {"q": "nothing"}).content.decode()
    assert "No jobs match “nothing”" in body
    # A queued job says what it waits for instead of "0 / 0 / 0".
    assert body.count("Waiting for a worker to read the file") == 0
    queued = client_alice.get(reverse("jobs:list")).content.decode()
    assert queued.count("Waiting for a worker to read the file") == 2
    # An unknown processor is ignored rather than an error.
    assert client_alice.get(reverse("jobs:list"), {"processor": "nope"}).status_code == 200


def test_column_is_preselected_and_a_sample_marks_the_field_in_error(client_alice):
    text = "id,review_body,stars\n1,I really loved this chair a lot,5\n2,Too soft for me,2\n"
    token = re.search(r"draft=([\w-]+)", _upload(client_alice, text.encode())["Location"]).group(1)
    page = client_alice.get(
        reverse("jobs:new_params"), {"draft": token, "processor": "sentiment"}
    ).content.decode()
    assert '<option value="review_body" selected>' in page
    assert "Picked for its name" in page

    data = {
        "draft": token,
        "processor": "sentiment",
        "params_for": "sentiment",
        "map-text": "",
        "action": "sample",
    }
    response = client_alice.post(reverse("jobs:new"), data, **HTMX)
    body = response.content.decode()
    assert "Please correct the fields marked above first." in body
    assert '<a href="#id_map-text">Column for “text”</a>' in body
    # The fields come along out of band, the one in error marked.
    assert '<div id="processor-fields" hx-swap-oob="true">' in body
    assert 'aria-invalid="true"' in body and "has-error" in body

    data["map-text"] = "review_body"
    ok = client_alice.post(reverse("jobs:new"), data, **HTMX).content.decode()
    # The fields come along again, their marks cleared.
    assert '<div id="processor-fields" hx-swap-oob="true">' in ok
    assert "has-error" not in ok and 'aria-invalid="true"' not in ok
    # Only the column the processor reads is shown beside its outputs.
    head = ok.split("<thead>")[1].split("</thead>")[0]
    assert "review_body" in head and "stars" not in head and "sentiment_score" in head
    # A CPU processor's few sample rows are mostly its start-up: no time is claimed from them.
    assert 'data-testid="sample-estimate"' not in ok


def test_estimate_from_finished_jobs(client_alice, alice, run_job):
    # A job of a few rows is all start-up: it gives no rate (it used to give 3 rows/s for a
    # processor that runs tens of thousands, and hours for a file of seconds).
    run_job(make_job(alice, "name,text\n" + "".join(f"n{i},t{i}\n" for i in range(30))))
    token = re.search(
        r"draft=([\w-]+)", _upload(client_alice, b"name,text\na,b\nc,d\n")["Location"]
    ).group(1)

    def estimate_for(processor: str) -> str:
        return client_alice.get(
            reverse("jobs:new_params"), {"draft": token, "processor": processor}
        ).content.decode()

    assert "no finished template job of yours has measured a rate" in estimate_for("template")
    # A big one: its rate while it worked (the samples), not its wait before a retry.
    t = timezone.now().timestamp()
    big = make_job(alice, "name\na\n")
    Job.objects.filter(pk=big.pk).update(
        status=JobStatus.COMPLETED,
        succeeded=30_000,
        started_at=timezone.now() - timedelta(minutes=5),
        finished_at=timezone.now(),
        worked_seconds=2.0,
        samples=[[t - 300, 0], [t - 299, 10_000], [t - 298, 20_000], [t - 60, 20_000], [t, 30_000]],
    )
    assert re.search(
        r"2 rows at about 10,000 rows/s\s+\(measured on your last 1 template job\)",
        estimate_for("template"),
    )
    assert "no finished sentiment job of yours" in estimate_for("sentiment")


def test_styled_500_and_favicon(client_alice, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "list_jobs", boom)
    client_alice.raise_request_exception = False
    response = client_alice.get(reverse("jobs:list"))
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body and "batchhub.css" in body
    assert "boom" not in body
    page = client_alice.get(reverse("jobs:new")).content.decode()
    assert 'rel="icon" href="/static/img/favicon.svg"' in page


def test_the_delete_note_holds_in_every_state_the_page_may_move_to(client_alice, alice):
    # The section is not reloaded as the job moves: loaded while the job ran it said "(it is
    # cancelled first)" after the job had finished, and loaded after the end it said nothing of
    # a cancel once a retry set the job running again.
    job = make_job(alice, rows_text(3))
    notes = set()
    for status in ("processing", "partial"):
        set_published(job, status=status)
        body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
        notes.add(body.split('data-testid="delete-note">', 1)[1].split("<", 1)[0])
    assert notes == {
        "Deletes the job, its input and its results (a job still running is cancelled first)."
    }


def test_the_status_filter_names_finished_with_failures_as_the_badges_do(client_alice, alice):
    # The filter offered "Partial", a word no badge uses: its jobs read "Completed with failures"
    # or "Every row failed".
    body = client_alice.get(reverse("jobs:list")).content.decode()
    assert '<option value="partial">Finished with failed rows</option>' in body
    assert ">Partial<" not in body


def test_no_jobs_match_names_the_filters_in_the_words_the_page_offers(client_alice, alice):
    make_job(alice, "name,text\na,b\n", name="reviews", processor="sentiment", params={})
    body = client_alice.get(
        reverse("jobs:list"), {"status": "partial", "processor": "sentiment"}
    ).content.decode()
    assert "No jobs match, status “Finished with failed rows”, processor “" in body
    assert "status partial" not in body and "processor sentiment<" not in body
