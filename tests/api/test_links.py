"""Signed results links (results_url): valid, expired, tampered, another job's, revoked, deleted."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from rest_framework.test import APIClient

from tests.api.conftest import API, assert_error

pytestmark = pytest.mark.django_db


def _path_and_token(url: str) -> tuple[str, str]:
    split = urlsplit(url)
    return split.path, parse_qs(split.query)["token"][0]


def test_results_url_downloads_without_a_key(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\nann\nbob\n"))
    body = api_alice.get(f"{API}/jobs/{job.public_id}").json()
    assert body["results_url"].startswith(f"http://testserver{API}/jobs/{job.public_id}/download?")
    assert body["results_url_expires_at"].endswith("Z")

    anonymous = APIClient()
    response = anonymous.get(body["results_url"])

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert b"".join(response.streaming_content).decode() == (
        "name,text,_status,_error\nann,ann!,succeeded,\nbob,bob!,succeeded,\n"
    )
    # The same bytes as the keyed download.
    keyed = api_alice.get(f"{API}/jobs/{job.public_id}/results")
    assert b"".join(keyed.streaming_content).decode().startswith("name,text,_status")


def test_expired_link_is_410(api_alice, alice, new_job, run_job, settings, monkeypatch):
    job = run_job(new_job(alice, "name\nann\n"))
    settings.BATCHHUB_LINK_SECONDS = 60
    url = api_alice.get(f"{API}/jobs/{job.public_id}").json()["results_url"]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)

    error = assert_error(APIClient().get(url), 410, "link_expired")

    assert "expired" in error["message"]


def test_tampered_token_is_404(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\nann\n"))
    url = api_alice.get(f"{API}/jobs/{job.public_id}").json()["results_url"]
    path, token = _path_and_token(url)
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    assert_error(APIClient().get(path, {"token": forged}), 404, "not_found")
    assert_error(APIClient().get(path), 404, "not_found")


def test_link_of_another_job_is_404(api_alice, alice, bob, new_job, run_job):
    mine = run_job(new_job(alice, "name\nann\n"))
    other = run_job(new_job(bob, "name\nsecret\n"))
    url = api_alice.get(f"{API}/jobs/{mine.public_id}").json()["results_url"]
    _path, token = _path_and_token(url)

    response = APIClient().get(f"{API}/jobs/{other.public_id}/download", {"token": token})

    assert_error(response, 404, "not_found")


def test_revoke_links_makes_old_links_410_and_gives_a_new_one(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\nann\n"))
    old = api_alice.get(f"{API}/jobs/{job.public_id}").json()["results_url"]

    response = api_alice.post(f"{API}/jobs/{job.public_id}/revoke-links")

    assert response.status_code == 200
    new = response.json()["results_url"]
    assert new != old
    assert_error(APIClient().get(old), 410, "link_revoked")
    assert APIClient().get(new).status_code == 200
    events = api_alice.get(f"{API}/jobs/{job.public_id}/events").json()["results"]
    assert events[-1]["type"] == "links_revoked"


def test_revoke_links_of_another_users_job_is_404(api_bob, alice, new_job):
    job = new_job(alice, "name\nann\n")
    assert_error(api_bob.post(f"{API}/jobs/{job.public_id}/revoke-links"), 404, "not_found")


def test_link_of_a_deleted_job_is_404(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\nann\n"))
    url = api_alice.get(f"{API}/jobs/{job.public_id}").json()["results_url"]
    assert api_alice.delete(f"{API}/jobs/{job.public_id}").status_code == 204

    assert_error(APIClient().get(url), 404, "not_found")


def test_results_link_in_another_format_and_status(api_alice, alice, new_job, run_job):
    job = run_job(new_job(alice, "name\nann\n"))
    response = api_alice.post(
        f"{API}/jobs/{job.public_id}/results-link",
        {"format": "jsonl", "status": "succeeded", "expires_in": 600},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["format"] == "jsonl" and body["status"] == "succeeded"

    download = APIClient().get(body["url"])

    assert download.status_code == 200
    assert download["Content-Type"].startswith("application/x-ndjson")
    lines = b"".join(download.streaming_content).decode().splitlines()
    assert len(lines) == 1 and '"status": "succeeded"' in lines[0]


def test_results_link_cannot_outlive_the_setting(api_alice, alice, new_job, settings):
    job = new_job(alice, "name\nann\n")
    response = api_alice.post(
        f"{API}/jobs/{job.public_id}/results-link",
        {"expires_in": settings.BATCHHUB_LINK_SECONDS + 1},
        format="json",
    )
    assert_error(response, 400, "invalid_request")
    assert_error(
        api_alice.post(
            f"{API}/jobs/{job.public_id}/results-link", {"format": "xls"}, format="json"
        ),
        400,
        "invalid_request",
    )


def test_results_link_of_another_users_job_is_404(api_bob, alice, new_job):
    job = new_job(alice, "name\nann\n")
    assert_error(api_bob.post(f"{API}/jobs/{job.public_id}/results-link"), 404, "not_found")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_the_page_the_api_and_a_signed_link_answer_the_same_download(
    alice, client_alice, api_alice, new_job, run_job, fmt
):
    job = run_job(new_job(alice, "name\nAnn\nBob\n"))
    page = client_alice.get(f"/jobs/{job.public_id}/download/{fmt}/?status=succeeded")
    keyed = api_alice.get(f"/api/v1/jobs/{job.public_id}/results?format={fmt}&status=succeeded")
    link = api_alice.post(
        f"/api/v1/jobs/{job.public_id}/results-link",
        {"format": fmt, "status": "succeeded"},
        format="json",
    ).json()["url"]
    signed = APIClient().get(link)
    answers = [page, keyed, signed]
    assert {r.status_code for r in answers} == {200}
    for header in ("Content-Type", "Content-Disposition", "Cache-Control"):
        assert len({r[header] for r in answers}) == 1, header
    assert page["Content-Disposition"].endswith(f'-results-succeeded.{fmt}"')
    assert len({b"".join(r.streaming_content) for r in answers}) == 1


def _downloads(alice, client_alice, api_alice, job, fmt: str, status: str = "all") -> list:
    """The same download from the job page, the keyed API and a signed link."""
    page = client_alice.get(f"/jobs/{job.public_id}/download/{fmt}/?status={status}")
    keyed = api_alice.get(f"/api/v1/jobs/{job.public_id}/results?format={fmt}&status={status}")
    link = api_alice.post(
        f"/api/v1/jobs/{job.public_id}/results-link",
        {"format": fmt, "status": status},
        format="json",
    ).json()["url"]
    answers = [page, keyed, APIClient().get(link)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    return answers


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_a_non_ascii_job_name_is_kept_in_filename_star_with_an_ascii_fallback(
    alice, client_alice, api_alice, new_job, run_job, fmt
):
    job = run_job(new_job(alice, "name\nAnn\n", name="Café résumé 東京.csv"))

    for response in _downloads(alice, client_alice, api_alice, job, fmt):
        assert response["Content-Disposition"] == (
            f'attachment; filename="Cafe_resume-results.{fmt}"; '
            f"filename*=UTF-8''Caf%C3%A9_r%C3%A9sum%C3%A9_%E6%9D%B1%E4%BA%AC-results.{fmt}"
        )


def test_a_name_with_no_ascii_letter_falls_back_to_the_job_id(
    alice, client_alice, api_alice, new_job, run_job
):
    job = run_job(new_job(alice, "name\nAnn\n", name="東京"))

    for response in _downloads(alice, client_alice, api_alice, job, "csv", "succeeded"):
        assert response["Content-Disposition"] == (
            f'attachment; filename="{job.public_id}-results-succeeded.csv"; '
            "filename*=UTF-8''%E6%9D%B1%E4%BA%AC-results-succeeded.csv"
        )


def test_a_name_cannot_smuggle_quotes_or_direction_marks_into_the_header(
    alice, client_alice, api_alice, new_job, run_job
):
    # A right-to-left override would show "…vsc.exe" as "…exe.csv"; a quote would end the value.
    job = run_job(new_job(alice, "name\nAnn\n", name='a"b\u202eexe'))

    for response in _downloads(alice, client_alice, api_alice, job, "csv"):
        assert response["Content-Disposition"] == 'attachment; filename="a_b_exe-results.csv"'


def test_a_results_link_request_with_an_unknown_field_is_refused(api_alice, alice, new_job):
    job = new_job(alice, "name\nann\n")
    response = api_alice.post(
        f"{API}/jobs/{job.public_id}/results-link", {"expires": 60}, format="json"
    )
    error = assert_error(response, 400, "invalid_request")
    assert error["details"] == {"expires": ["Unknown field; did you mean 'expires_in'?"]}
