"""POST /jobs, /jobs/validate and /uploads refuse what they would otherwise drop silently: a
field they do not take (a typo such as `concurency`), a repeated multipart part."""

from __future__ import annotations

import json

import pytest

from jobs.models import Job

from .conftest import API, assert_error, upload

pytestmark = pytest.mark.django_db

PARAMS = json.dumps({"template": "{name}!"})


@pytest.mark.parametrize("endpoint", ["jobs", "jobs/validate"])
def test_two_file_parts_are_refused(api_alice, endpoint):
    response = api_alice.post(
        f"{API}/{endpoint}",
        {
            "file": [upload("name\nann\n", "a.csv"), upload("name\nbob\n", "b.csv")],
            "processor": "template",
            "params": PARAMS,
        },
        format="multipart",
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "Send one file: the request has 2 file parts."
    assert error["details"] == {"file": ["Sent 2 times; send it once."]}
    assert not Job.objects.exists()


def test_a_field_sent_twice_is_refused(api_alice):
    response = api_alice.post(
        f"{API}/jobs",
        {"file": upload("name\nann\n"), "processor": ["template", "sentiment"], "params": PARAMS},
        format="multipart",
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "Send processor once: the request has it 2 times."
    assert not Job.objects.exists()


def test_one_of_each_part_still_creates_the_job(api_alice):
    response = api_alice.post(
        f"{API}/jobs",
        {"file": upload("name\nann\n"), "processor": "template", "params": PARAMS},
        format="multipart",
    )
    assert response.status_code == 201, response.json()


# --- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["jobs", "jobs/validate"])
def test_a_misspelt_field_in_json_is_refused_with_the_close_name(api_alice, endpoint):
    body = {
        "processor": "template",
        "params": {"template": "{name}!"},
        "rows": [{"name": "ann"}],
        "concurency": 2,
    }
    response = api_alice.post(f"{API}/{endpoint}", body, format="json")

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "Unknown field 'concurency' (did you mean 'concurrency'?)."
    assert error["details"] == {"concurency": ["Unknown field; did you mean 'concurrency'?"]}
    assert not Job.objects.exists()


@pytest.mark.parametrize("endpoint", ["jobs", "jobs/validate"])
def test_a_misspelt_field_in_a_multipart_upload_is_refused(api_alice, endpoint):
    response = api_alice.post(
        f"{API}/{endpoint}",
        {"file": upload("name\nann\n"), "processor": "template", "params": PARAMS, "nmae": "x"},
        format="multipart",
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "Unknown field 'nmae' (did you mean 'name'?)."
    assert not Job.objects.exists()


def test_every_unknown_field_is_named(api_alice):
    body = {"processor": "template", "rows": [{"name": "ann"}], "wat": 1, "webhook": "x"}
    response = api_alice.post(f"{API}/jobs", body, format="json")

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == ("Unknown fields: 'wat', 'webhook' (did you mean 'webhook_url'?).")
    assert set(error["details"]) == {"wat", "webhook"}


def test_a_field_of_the_other_body_says_where_it_goes(api_alice):
    form = api_alice.post(
        f"{API}/jobs",
        {"file": upload("name\nann\n"), "processor": "template", "params": PARAMS, "job_id": "1"},
        format="multipart",
    )
    assert assert_error(form, 400, "invalid_request")["details"] == {
        "job_id": ["Not taken here: taken in a JSON body only."]
    }
    as_json = api_alice.post(
        f"{API}/jobs", {"processor": "template", "file": "a.csv"}, format="json"
    )
    assert "multipart" in assert_error(as_json, 400, "invalid_request")["message"]


def test_every_field_the_docs_name_is_still_taken_in_json(api_alice):
    body = {
        "processor": "template",
        "params": {"template": "{name}!"},
        "rows": [{"name": "ann", "text": "hi"}],
        "name": "all fields",
        "id_column": "name",
        "column_map": {},
        "webhook_url": None,
        "concurrency": 2,
        "rate_limit": 30,
        "max_attempts": 2,
        "job_id": "every-field",
    }
    response = api_alice.post(f"{API}/jobs", body, format="json")
    assert response.status_code == 201, response.json()

    documents = {
        "processor": "template",
        "params": {"template": "{text}!"},
        "documents": ["hello"],
        "column_mapping": {},
    }
    assert api_alice.post(f"{API}/jobs", documents, format="json").status_code == 201
    sample = {"processor": "template", "params": {"template": "{name}!"}, "rows": [{"name": "a"}]}
    checked = api_alice.post(f"{API}/jobs/validate", {**sample, "sample": 1}, format="json")
    assert checked.status_code == 200 and checked.json()["valid"] is True


def test_every_field_the_docs_name_is_still_taken_in_multipart(api_alice):
    response = api_alice.post(
        f"{API}/jobs",
        {
            "file": upload("name,text\nann,hi\n"),
            "processor": "template",
            "params": PARAMS,
            "name": "all fields",
            "id_column": "name",
            "column_map": "{}",
            "webhook_url": "",
            "concurrency": "2",
            "rate_limit": "30",
            "max_attempts": "2",
            # A browser form posting with its session sends its CSRF token as a field.
            "csrfmiddlewaretoken": "token",
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()


def test_a_misspelt_field_of_a_two_step_upload_is_refused(api_alice):
    response = api_alice.post(f"{API}/uploads", {"file_name": "big.csv"}, format="json")

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "Unknown field 'file_name' (did you mean 'filename'?)."
    ok = api_alice.post(f"{API}/uploads", {"filename": "big.csv"}, format="json")
    assert ok.status_code == 201


def test_a_flood_of_unknown_fields_gets_a_short_answer(api_alice):
    body = {"x" * 500: 1, "processor": "template", "rows": [{"name": "a"}]}
    body.update({f"extra_{n}": n for n in range(5000)})
    response = api_alice.post(f"{API}/jobs", body, format="json")

    error = assert_error(response, 400, "invalid_request")
    assert len(error["details"]) == 20
    assert error["message"].startswith(f"Unknown fields: '{'x' * 59}…', 'extra_0', ")
    assert error["message"].endswith("and 4,981 more.")
    assert len(response.content) < 3000


def test_a_browser_form_s_csrf_token_is_taken_on_every_endpoint_that_checks_fields(
    api_alice, alice
):
    # A session client posting a form sends Django's CSRF token as a field: refused as unknown
    # on retry and key create (which take forms), where only create and validate took it.
    from tests.factories import JobFactory, add_rows

    job = JobFactory(owner=alice, status="partial", rows=1, succeeded=0, failed=1)
    add_rows(job, 1, status="failed")
    token = {"csrfmiddlewaretoken": "token"}
    for path, form in ((f"{API}/keys", {"name": "a key", **token}),):
        response = api_alice.post(path, form, format="multipart")
        body = response.json() if response.content else {}
        assert response.status_code < 300, (path, body)
    retried = api_alice.post(f"{API}/jobs/{job.public_id}/retry", token, format="multipart")
    assert retried.status_code == 200, retried.json()
