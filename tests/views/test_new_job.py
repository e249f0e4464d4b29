"""The new-job flow through the Django test client: upload → preview → options → start → results."""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from jobs import drafts
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
CSV_TEXT = "id;name;text\nA1;Ann;I love it\nB2;Bob;I hate it\nC3;Cy;It is a chair\n"


def _upload(client, text: str = CSV_TEXT, name: str = "people.csv"):
    return client.post(
        reverse("jobs:new"),
        {"file": SimpleUploadedFile(name, text.encode("utf-8")), "action": "upload"},
    )


def _token(response) -> str:
    match = re.search(r"draft=([A-Za-z0-9_-]+)", response["Location"])
    assert match, response["Location"]
    return match.group(1)


def test_upload_page_works_without_js(client_alice):
    body = client_alice.get(reverse("jobs:new")).content.decode()
    assert 'enctype="multipart/form-data"' in body
    assert '<input type="file"' in body
    assert '<label for="id_file"' in body


def test_upload_shows_the_preview(client_alice, alice):
    response = _upload(client_alice)
    assert response.status_code == 302
    token = _token(response)
    draft = drafts.load(alice, token)
    assert draft is not None and draft.filename == "people.csv"

    page = client_alice.get(response["Location"])
    body = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="row-count">3<' in body
    assert 'data-testid="delimiter">semicolon<' in body
    assert 'data-testid="encoding">utf-8' in body
    assert "<td>Ann</td>" in body and "<td>It is a chair</td>" in body
    assert f'name="draft" value="{token}"' in body
    # The params form is generated from the processor's schema, the mapping from its inputs.
    assert 'name="processor"' in body
    assert "Update form" in body  # the no-JS way to change the processor


def test_a_draft_belongs_to_its_uploader(client_alice, client_bob):
    token = _token(_upload(client_alice))
    page = client_bob.get(reverse("jobs:new"), {"draft": token})
    assert "no longer available" in page.content.decode()
    assert "Ann" not in page.content.decode()
    assert (
        client_bob.get(
            reverse("jobs:new_params"), {"draft": token, "processor": "template"}
        ).status_code
        == 404
    )
    started = client_bob.post(
        reverse("jobs:new"), {"draft": token, "processor": "template", "action": "start"}
    )
    assert started.status_code == 400
    assert not Job.objects.exists()


def test_a_token_cannot_walk_the_storage(client_alice, alice):
    for token in ("../1", "..", "a/b", ""):
        assert drafts.load(alice, token) is None


def test_upload_errors_are_reported_by_line(client_alice):
    broken = 'name,text\n"Ann,unterminated\n'
    response = _upload(client_alice, broken)
    page = client_alice.get(response["Location"]) if response.status_code == 302 else response
    body = page.content.decode()
    assert 'data-testid="file-errors"' in body or 'data-testid="form-error"' in body
    assert "Line " in body


def test_empty_and_missing_files_are_refused(client_alice):
    response = _upload(client_alice, "")
    assert response.status_code == 400
    assert "The submitted file is empty." in response.content.decode()
    response = client_alice.post(reverse("jobs:new"), {"action": "upload"})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()


def test_too_large_upload_is_refused(client_alice, settings):
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 1024
    response = _upload(client_alice, "name\n" + "x\n" * 2000)
    assert response.status_code == 413  # as the API answers
    assert "larger than the limit of 1,024 bytes" in response.content.decode()


def test_a_gzip_over_the_decompressed_limit_is_refused_as_too_large(client_alice, settings):
    settings.BATCHHUB_MAX_DECOMPRESSED_BYTES = 100_000
    body = gzip.compress(b"name\n" + b"ann\n" * 60_000)
    response = client_alice.post(
        reverse("jobs:new"),
        {"file": SimpleUploadedFile("big.csv.gz", body), "action": "upload"},
    )
    assert response.status_code == 413  # as the API answers
    assert "decompresses to more than 100,000 bytes" in response.content.decode()
    assert not list((settings.MEDIA_ROOT / "drafts").rglob("big.csv.gz"))  # no draft kept


def test_params_partial_swaps_with_the_processor(client_alice):
    token = _token(_upload(client_alice))
    response = client_alice.get(
        reverse("jobs:new_params"), {"draft": token, "processor": "sentiment"}, **HTMX
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith('<div id="processor-fields">')
    assert 'name="param-threshold"' in text and 'type="number"' in text
    assert 'name="map-text"' in text  # sentiment reads "text"; the file has a "text" column
    assert 'name="params_for" value="sentiment"' in text

    text = client_alice.get(
        reverse("jobs:new_params"), {"draft": token, "processor": "template"}, **HTMX
    ).content.decode()
    assert 'name="param-template"' in text and "<textarea" in text
    assert 'name="param-output_column"' in text and 'value="text"' in text  # the schema default


def test_update_form_without_js_keeps_what_was_typed(client_alice):
    token = _token(_upload(client_alice))
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "sentiment",
            "params_for": "template",
            "param-template": "{name}",
            "name": "Kept name",
            "action": "update",
        },
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="param-threshold"' in body
    assert 'value="Kept name"' in body


def test_start_with_bad_params_keeps_the_input_and_marks_the_field(client_alice):
    token = _token(_upload(client_alice))
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "template",
            "params_for": "template",
            "param-template": "{nope.__class__}",
            "param-output_column": "greeting",
            "name": "My job",
            "webhook_url": "",
            "concurrency": "2",
            "action": "start",
        },
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "attribute or index access" in body
    assert "{nope.__class__}</textarea>" in body  # what was typed is still there
    assert 'value="greeting"' in body and 'value="My job"' in body
    assert not Job.objects.exists()


def test_start_with_missing_required_param(client_alice):
    token = _token(_upload(client_alice))
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "template",
            "params_for": "template",
            "param-template": "",
            "action": "start",
        },
    )
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not Job.objects.exists()


def test_start_with_a_missing_mapped_column(client_alice):
    token = _token(_upload(client_alice, "name,body\nAnn,hi\n"))
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "sentiment",
            "params_for": "sentiment",
            "param-threshold": "0.05",
            "map-text": "",
            "action": "start",
        },
    )
    assert response.status_code == 400
    assert not Job.objects.exists()
    # Mapping "text" to the "body" column fixes it.
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "sentiment",
            "params_for": "sentiment",
            "param-threshold": "0.05",
            "map-text": "body",
            "action": "start",
        },
    )
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.column_map == {"text": "body"}


def test_a_bad_webhook_url_is_shown_next_to_the_field(client_alice):
    token = _token(_upload(client_alice))
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "template",
            "params_for": "template",
            "param-template": "{name}",
            "webhook_url": "http://127.0.0.1/hook",
            "action": "start",
        },
    )
    assert response.status_code == 400
    assert not Job.objects.exists()
    assert 'value="http://127.0.0.1/hook"' in response.content.decode()


def test_a_rate_limit_too_large_to_store_is_shown_next_to_the_field(client_alice):
    token = _token(_upload(client_alice))
    response = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "template",
            "params_for": "template",
            "param-template": "{name}",
            "rate_limit": str(10**20),
            "action": "start",
        },
    )
    assert response.status_code == 400
    assert not Job.objects.exists()
    assert "less than or equal to 2147483647" in response.content.decode()


def test_new_job_end_to_end(client_alice, alice, run_job):
    upload = _upload(client_alice)
    token = _token(upload)
    assert client_alice.get(upload["Location"]).status_code == 200

    start = client_alice.post(
        reverse("jobs:new"),
        {
            "draft": token,
            "processor": "template",
            "params_for": "template",
            "param-template": "Hello {name}",
            "param-output_column": "greeting",
            "name": "Greetings",
            "id_column": "id",
            "webhook_url": "",
            "concurrency": "2",
            "rate_limit": "",
            "action": "start",
        },
    )
    assert start.status_code == 302
    job = Job.objects.get(owner=alice)
    assert start["Location"] == reverse("jobs:detail", args=[job.public_id])
    assert job.name == "Greetings" and job.id_column == "id" and job.concurrency == 2
    assert job.params["template"] == "Hello {name}"
    assert drafts.load(alice, token) is None  # the draft is gone once the job has its own copy

    job = run_job(job)
    assert job.status == JobStatus.COMPLETED
    page = client_alice.get(start["Location"]).content.decode()
    assert 'data-testid="status">Completed' in page
    assert 'data-testid="succeeded">3<' in page
    assert "Hello Ann" in page

    download = client_alice.get(reverse("jobs:download", args=[job.public_id, "csv"]))
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert rows[0] == ["id", "name", "text", "greeting", "_status", "_error"]
    assert rows[1:] == [
        ["A1", "Ann", "I love it", "Hello Ann", "succeeded", ""],
        ["B2", "Bob", "I hate it", "Hello Bob", "succeeded", ""],
        ["C3", "Cy", "It is a chair", "Hello Cy", "succeeded", ""],
    ]


def test_try_on_first_rows(client_alice):
    data = _template_form(_token(_upload(client_alice)), "Hi {name}", "sample")
    response = client_alice.post(reverse("jobs:new"), data, **HTMX)
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith('<section id="sample"')
    assert "Hi Ann" in text and "Hi Cy" in text
    assert not Job.objects.exists()

    bad = client_alice.post(reverse("jobs:new"), {**data, "param-template": "{x.y}"}, **HTMX)
    assert 'role="alert"' in bad.content.decode()

    without_js = client_alice.post(reverse("jobs:new"), data)
    assert "Hi Bob" in without_js.content.decode() and "<html" in without_js.content.decode()


def _template_form(token: str, template: str, action: str) -> dict[str, str]:
    return {
        "draft": token,
        "processor": "template",
        "params_for": "template",
        "param-template": template,
        "action": action,
    }


def test_a_sample_names_a_column_the_file_lacks_as_start_would(client_alice):
    # It used to run 10 rows with an empty output and no word: the misspelled column only came
    # out on Start.
    data = _template_form(_token(_upload(client_alice)), "Hi {frist} {name}", "sample")
    body = client_alice.post(reverse("jobs:new"), data, **HTMX).content.decode()
    said = "The processor needs a column &quot;frist&quot;, but the header has none"
    assert said in body
    assert "Hi  Ann" not in body and "<tbody>" not in body
    started = client_alice.post(reverse("jobs:new"), {**data, "action": "start"})
    assert said in started.content.decode() and not Job.objects.exists()


def test_sample_rows_keep_one_cell_per_output_when_a_row_fails(client_alice):
    # JSONL: the second row has no "text", so the sample fails it and the others succeed.
    text = '{"text": "I love it"}\n{"other": "x"}\n{"text": "I hate it"}\n'
    token = _token(_upload(client_alice, text, name="reviews.jsonl"))
    data = {"draft": token, "processor": "sentiment", "params_for": "sentiment"}
    response = client_alice.post(reverse("jobs:new"), {**data, "action": "sample"}, **HTMX)
    assert response.status_code == 200
    body = response.content.decode().split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr class=\"(row-\w+)\">(.*?)</tr>", body, re.S)
    assert [status for status, _ in rows] == ["row-succeeded", "row-failed", "row-succeeded"]
    numbers = [re.search(r'<th scope="row">(\d+)</th>', cells).group(1) for _, cells in rows]
    assert numbers == ["1", "2", "3"]
    # Two outputs (label, score) on every row; the failed row's are empty, its error beside them.
    outputs = [re.findall(r'<td class="out">([^<]*)</td>', cells) for _, cells in rows]
    assert [len(o) for o in outputs] == [2, 2, 2]
    assert outputs[1] == ["", ""] and outputs[0][0] == "positive" and outputs[2][0] == "negative"
    assert "The text is empty." in rows[1][1]


def test_another_processor_picked_without_js_redraws_its_fields(client_alice, alice):
    token = _token(_upload(client_alice))
    data = {
        "draft": token,
        "name": "kept",
        "processor": "sentiment",
        "params_for": "template",
        "param-template": "Hi {name}",
        "action": "start",
    }
    response = client_alice.post(reverse("jobs:new"), data)
    assert response.status_code == 400
    page = response.content.decode()
    assert "You picked another processor" in page
    assert 'name="map-text"' in page and 'name="param-template"' not in page
    assert 'value="kept"' in page
    assert not Job.objects.exists()
    assert drafts.load(alice, token) is not None


def test_old_drafts_are_cleaned(client_alice, alice, monkeypatch):
    token = _token(_upload(client_alice))
    later = timezone.now() + timedelta(days=2)
    assert drafts.cleanup(now=later) == 1
    assert drafts.load(alice, token) is None
    assert not default_storage.exists(f"drafts/{alice.pk}/{token}/people.csv")


def test_signup_is_off_by_default(client):
    assert client.get(reverse("signup")).status_code == 404


def test_signup_when_allowed(client, settings, django_user_model):
    settings.BATCHHUB_ALLOW_SIGNUP = True
    assert client.get(reverse("signup")).status_code == 200
    response = client.post(
        reverse("signup"),
        {
            "username": "carol",
            "password1": "a much longer passphrase",
            "password2": "a much longer passphrase",
        },
    )
    assert response.status_code == 302
    assert django_user_model.objects.filter(username="carol").exists()
    assert client.get(reverse("jobs:list")).status_code == 200


def test_login_page_renders(client):
    body = client.get(reverse("login")).content.decode()
    assert 'name="username"' in body and 'name="password"' in body
    assert '<label for="id_username">' in body


def test_start_on_a_file_with_problems_lists_them_once(client_alice):
    # They were listed twice: at the top as the refusal's details, and in the preview's box.
    ragged = "name,text\nann,hi\nbob,too,many\ncy,ok\n"
    token = _token(_upload(client_alice, ragged, name="ragged.csv"))
    data = _template_form(token, "Hi {name}", "start")
    response = client_alice.post(reverse("jobs:new"), data)
    body = response.content.decode()
    assert response.status_code == 400 and not Job.objects.exists()
    assert body.count("<li>Line 3, column 3:") == 1, body
    assert "see the problems in the file below" in body


def _llm_form(token: str, credential: str, action: str) -> dict[str, str]:
    return {
        "draft": token,
        "processor": "llm",
        "params_for": "llm",
        "param-base_url": "https://llm.example.com/v1",
        "param-model": "m",
        "param-prompt": "Hi {name}",
        "param-credential": credential,
        "action": action,
    }


def _credential_field(body: str) -> str:
    """The credential field's group on the page, where its error is shown."""
    groups = [g for g in body.split('<div class="field') if 'id="id_param-credential"' in g]
    assert len(groups) == 1 and groups[0].startswith(' has-error">'), groups
    return groups[0]


def test_start_with_a_credential_the_user_has_not_got_marks_the_field(client_alice, bob, fake_dns):
    # It used to start, and every row failed with this message.
    from jobs.credentials import save_credential

    fake_dns["llm.example.com"] = ["93.184.216.34"]
    save_credential(bob, "my-llm", "sk-bobs-key-000000000")  # bob's is not alice's
    token = _token(_upload(client_alice))
    response = client_alice.post(reverse("jobs:new"), _llm_form(token, "my-llm", "start"))
    assert response.status_code == 400
    field = _credential_field(response.content.decode())
    assert "You have no saved credential named &#x27;my-llm&#x27;" in field
    assert "my-llm</textarea>" in field  # what was typed is kept
    assert not Job.objects.exists()


def test_a_sample_refuses_a_missing_credential_as_start_would(client_alice, fake_dns):
    fake_dns["llm.example.com"] = ["93.184.216.34"]
    token = _token(_upload(client_alice))
    response = client_alice.post(reverse("jobs:new"), _llm_form(token, "nope", "sample"), **HTMX)
    body = response.content.decode()
    assert "You have no saved credential named &#x27;nope&#x27;" in body
    assert "<tbody>" not in body  # no rows were run
