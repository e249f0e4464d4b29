"""A refused CSRF check (batchhub/csrf_failure.py): Django's 403 page, and for htmx a reload of
the page, so a page whose token went stale gets a fresh one instead of dead buttons."""

from __future__ import annotations

from django.test import Client

from jobs.models import JobStatus


def _strict_client(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def test_an_htmx_post_with_a_stale_token_reloads_the_page(alice, published):
    client = _strict_client(alice)
    assert client.get(f"/jobs/{published.public_id}/").status_code == 200  # the CSRF cookie
    stale = "x" * 64  # a token of another secret, as after signing in again elsewhere
    response = client.post(
        f"/jobs/{published.public_id}/pause/", HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=stale
    )
    assert response.status_code == 403
    assert response["HX-Refresh"] == "true"
    published.refresh_from_db()
    assert published.status == JobStatus.PROCESSING  # refused: nothing happened


def test_a_plain_post_without_a_token_gets_djangos_403_page(alice, published):
    client = _strict_client(alice)
    response = client.post(f"/jobs/{published.public_id}/pause/")
    assert response.status_code == 403
    assert "HX-Refresh" not in response
    assert b"CSRF verification failed" in response.content
