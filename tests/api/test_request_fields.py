"""POST /jobs and /jobs/validate refuse what they would otherwise drop silently: a repeated
multipart part."""

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
