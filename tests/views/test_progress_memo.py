"""The job page's live partial reused within a second (jobs/progress_fragment.py): one render a
second per job and state, no CSRF token in it (htmx posts with the page's), and only ever the
user's own job.
"""

from __future__ import annotations

import re

import pytest
from django.middleware.csrf import _unmask_cipher_token
from django.test import Client

from jobs import progress_fragment

TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
HEADER_TOKEN = re.compile(rb'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'')


@pytest.fixture(autouse=True)
def _clock(live_status_cache, pinned_second):
    return pinned_second


def _url(job, seen: str = "") -> str:
    return f"/jobs/{job.public_id}/progress/" + (f"?seen={seen}" if seen else "")


def _poll(client, job, seen: str = ""):
    return client.get(_url(job, seen), HTTP_HX_REQUEST="true")


def test_polls_in_one_second_render_once(client_alice, published, renders, _clock):
    first, second = _poll(client_alice, published), _poll(client_alice, published)
    assert first.status_code == second.status_code == 200
    assert renders == [published.public_id]
    assert first.content == second.content
    _clock[0] += 1
    _poll(client_alice, published)
    assert len(renders) == 2


def test_a_reused_fragment_is_what_a_fresh_render_gives(client_alice, published):
    reused = [_poll(client_alice, published).content for _ in range(2)][1]
    progress_fragment.clear()
    fresh = _poll(client_alice, published).content
    assert reused == fresh


def test_the_poll_carries_no_token_and_its_buttons_post_with_the_pages(alice, published):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get(f"/jobs/{published.public_id}/")
    assert page.status_code == 200
    assert len(TOKEN.findall(page.content)) >= 2  # pause and cancel post without JS too
    (header_token,) = HEADER_TOKEN.findall(page.content)  # what htmx sends with each post
    secret = client.cookies["csrftoken"].value
    assert _unmask_cipher_token(header_token.decode()) == secret

    poll = _poll(client, published)
    assert poll.status_code == 200 and b'id="btn-pause"' in poll.content
    assert TOKEN.findall(poll.content) == []
    assert "csrftoken" not in poll.cookies  # nothing masked, nothing to renew

    url = f"/jobs/{published.public_id}/pause/"
    refused = client.post(url, HTTP_HX_REQUEST="true")
    assert refused.status_code == 403  # the check is on: a post needs the token
    paused = client.post(url, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=header_token.decode())
    assert paused.status_code == 200 and b'data-status="paused"' in paused.content
    assert TOKEN.findall(paused.content) == []  # the action's answer is an htmx answer too
    # The page keeps its forms' tokens after polls kept the controls without them.
    page = client.get(f"/jobs/{published.public_id}/")
    assert b'id="btn-resume"' in page.content and len(TOKEN.findall(page.content)) >= 2


def test_another_user_gets_a_404_never_the_fragment(client_alice, client_bob, published):
    assert _poll(client_alice, published).status_code == 200  # in the memo now
    response = _poll(client_bob, published)
    assert response.status_code == 404
    assert b'id="progress"' not in response.content


def test_a_changed_status_is_never_served_stale(
    client_alice, published, django_capture_on_commit_callbacks
):
    before = _poll(client_alice, published)
    assert b'data-status="processing"' in before.content
    with django_capture_on_commit_callbacks(execute=True):
        client_alice.post(f"/jobs/{published.public_id}/pause/")
    seen = before.content.split(b"?seen=")[1].split(b'"')[0].decode()
    after = _poll(client_alice, published, seen)
    assert b'data-status="paused"' in after.content
    assert after["HX-Trigger"] == "job-changed"
    assert b"Job paused." in after.content
    # The pieces kept per what they show (the stepper, the controls) follow the status too.
    assert b'<span class="step-note">paused</span>' in after.content
    assert b'id="btn-resume"' in after.content and b'id="btn-pause"' not in after.content


def test_the_announcement_follows_what_the_page_saw(client_alice, published, renders):
    quiet = _poll(client_alice, published, "processing-0")
    told = _poll(client_alice, published, "queued-0")
    again = _poll(client_alice, published, "queued-0")
    assert b"hx-swap-oob" not in quiet.content
    assert b"Job processing." in told.content and b"Job processing." in again.content
    assert len(renders) == 2
    assert told["HX-Trigger"] == "job-changed" and "HX-Trigger" not in quiet
