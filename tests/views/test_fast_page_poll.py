"""The job page's poll answered below Django's stack (accounts/fast_page_poll.py) from the job's
live status (a fragment made in this second, else one rendered from it): the same answer as the
stack's, and the stack's answer whenever the cache does not vouch for every part (sign-in, user,
owner, live status).

These switch the default cache to Redis (the `redis_default` fixture): the fast answer needs the
sessions and the live status in Redis, as deployments run them.
"""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.cached_db import SessionStore
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from accounts import session_user
from batchhub.weblog import ANSWERED_FROM_CACHE
from jobs import livestatus, poll, progress_fragment, services


@pytest.fixture
def page(redis_default, pinned_second, alice, published):
    """alice's browser on her running job's page, its session in the Redis cache."""
    client = Client()
    client.force_login(alice)
    client.get(reverse("jobs:detail", args=[published.public_id]))  # the page: its CSRF cookie
    url = reverse("jobs:progress", args=[published.public_id]) + "?seen=processing-0-0"
    return client, url


@pytest.fixture
def stack_calls(monkeypatch):
    """How many polls reached the view (progress_fragment.poll)."""
    calls = []
    real = progress_fragment.poll

    def counting(request, public_id):
        calls.append(public_id)
        return real(request, public_id)

    monkeypatch.setattr(progress_fragment, "poll", counting)
    return calls


def _poll(client, url):
    return client.get(url, HTTP_HX_REQUEST="true")


def _fast(response) -> bool:
    return bool(response.wsgi_request.META.get(ANSWERED_FROM_CACHE))


def _what_the_user_gets(response) -> tuple:
    """Status, headers, body and cookies set."""
    cookies = {name: morsel.OutputString() for name, morsel in response.cookies.items()}
    return response.status_code, dict(response.headers), response.content, cookies


@pytest.mark.parametrize("seen", ["processing-0-0", "queued-0-0", "processing-0-999999", ""])
def test_polls_get_the_stacks_answer_from_below_it(page, stack_calls, renders, settings, seen):
    client, url = page
    url = url.split("?")[0] + (f"?seen={seen}" if seen else "")
    first = _poll(client, url)  # the fragment of this second, rendered below the stack
    fast = _poll(client, url)  # the same fragment, reused
    assert _fast(first) and _fast(fast) and not stack_calls and len(renders) == 1
    settings.BATCHHUB_FAST_STATUS = False
    stack = _poll(client, url)
    assert not _fast(stack) and len(stack_calls) == 1 and len(renders) == 1
    assert _what_the_user_gets(first) == _what_the_user_gets(stack)
    assert _what_the_user_gets(fast) == _what_the_user_gets(stack)
    progress_fragment.clear()
    rendered_by_the_stack = _poll(client, url)
    assert len(renders) == 2
    assert _what_the_user_gets(rendered_by_the_stack) == _what_the_user_gets(first)
    assert fast.status_code == 200 and b'id="btn-pause"' in fast.content
    assert fast.headers["Vary"] == "Cookie" and "Content-Security-Policy" in fast.headers
    assert not fast.cookies and "csrfmiddlewaretoken" not in fast.content.decode()
    assert int(fast.headers["Content-Length"]) == len(fast.content)
    if seen == "queued-0-0":
        assert fast.headers["HX-Trigger"] == "job-changed" and b"Job processing." in fast.content
    if seen == "processing-0-999999":
        assert fast.headers["HX-Trigger"] == "job-changed"


def test_a_poll_makes_one_trip_and_the_stack_reads_nothing_again(page, monkeypatch, redis_commands):
    client, url = page
    sent = redis_commands()
    first = _poll(client, url)
    assert _fast(first) and first.status_code == 200
    assert sent == ["MGET", "GET"]  # session + live status, then the entry the session names
    sent.clear()
    progress_fragment.clear()  # no fragment of this second: rendered from the live status
    assert _fast(_poll(client, url))
    assert sent == ["MGET"]  # the session's user is known: their entry comes in the same trip
    sent.clear()
    progress_fragment.clear()
    monkeypatch.setattr(livestatus, "read", lambda *args: None)  # the key does not answer
    by_the_stack = _poll(client, url)
    assert not _fast(by_the_stack) and by_the_stack.status_code == 200
    assert sent == ["MGET"]  # the stack took the session, the entry and the status read below


def test_a_finished_job_stops_the_polling_from_below_too(
    page, published, stack_calls, django_capture_on_commit_callbacks, settings
):
    client, url = page
    with django_capture_on_commit_callbacks(execute=True):
        services.cancel(published, actor="alice")
    first = _poll(client, url)
    fast = _poll(client, url)
    assert first.status_code == fast.status_code == 286
    assert _fast(first) and _fast(fast) and not stack_calls
    assert fast.headers["HX-Trigger"] == "job-changed"
    settings.BATCHHUB_FAST_STATUS = False
    stack = _poll(client, url)
    assert _what_the_user_gets(fast) == _what_the_user_gets(stack)
    assert fast.headers["Vary"] == "Cookie"  # the session was read


def test_another_users_poll_is_the_stacks_404(page, bob, published, stack_calls):
    client, url = page
    assert _poll(client, url).status_code == 200  # alice's fragment of this second
    other = Client()
    other.force_login(bob)
    response = _poll(other, url)
    assert response.status_code == 404 and not _fast(response)


def test_a_session_signed_out_elsewhere_is_sent_to_sign_in(page):
    client, url = page
    _poll(client, url)
    assert _fast(_poll(client, url))
    SessionStore(client.cookies["sessionid"].value).delete()
    response = _poll(client, url)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert not _fast(response)


def test_a_changed_password_signs_the_page_out_at_once(page, alice):
    client, url = page
    _poll(client, url)
    assert _fast(_poll(client, url))
    alice.set_password("another password 123")
    alice.save()
    response = _poll(client, url)
    assert response.status_code == 302 and not _fast(response)


def test_a_deactivated_user_is_signed_out_at_once(page, alice):
    client, url = page
    _poll(client, url)
    assert _fast(_poll(client, url))
    alice.is_active = False
    alice.save()
    response = _poll(client, url)
    assert response.status_code == 302 and not _fast(response)


@pytest.mark.parametrize(
    "change", [{"session_hash": "another hash"}, {"is_active": False}, {"id": 999999}]
)
def test_an_entry_that_does_not_vouch_leaves_the_sign_in_to_the_stack(page, alice, change):
    client, url = page
    _poll(client, url)
    assert _fast(_poll(client, url))
    key = session_user.cache_key(alice.pk)
    cache.set(key, {**cache.get(key), **change})
    response = _poll(client, url)
    assert not _fast(response)
    assert response.status_code == 200  # the database still signs alice in


def test_a_fragment_of_an_earlier_second_is_not_used(page, pinned_second, renders):
    client, url = page
    _poll(client, url)
    _poll(client, url)
    assert len(renders) == 1
    pinned_second[0] += 1
    assert _fast(_poll(client, url)) and len(renders) == 2


def test_a_poll_without_a_csrf_cookie_is_answered_and_sets_none(page):
    client, url = page
    _poll(client, url)
    del client.cookies["csrftoken"]
    response = _poll(client, url)
    assert _fast(response) and response.status_code == 200 and not response.cookies


def test_a_cache_that_fails_leaves_the_answer_to_the_stack(page, monkeypatch, stack_calls):
    client, url = page
    _poll(client, url)

    def broken(*args, **kwargs):
        raise ValueError("a reply it cannot read")

    monkeypatch.setattr(poll, "session_and_live", broken)
    response = _poll(client, url)
    assert response.status_code == 200 and not _fast(response) and len(stack_calls) == 1


def test_the_switch_turns_it_off(page, settings, stack_calls):
    client, url = page
    settings.BATCHHUB_FAST_STATUS = False
    _poll(client, url)
    assert not _fast(_poll(client, url)) and len(stack_calls) == 2
