"""The settings page (signing secret, rotation) and the "send again" button and endpoint."""

from __future__ import annotations

import base64
import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework.test import APIClient

from jobs.models import JobEvent, UserSettings, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook


@pytest.fixture
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr(deliver_webhook, "delay", lambda *args: calls.append(args))
    return calls


def test_settings_page_shows_masked_secret_and_reveal(client, wh_alice):
    client.force_login(wh_alice)
    response = client.get("/settings/")
    assert response.status_code == 200
    html = response.content.decode()
    secret = UserSettings.objects.get(user=wh_alice).webhook_secret  # created on first visit
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    masked = re.search(r'data-testid="secret-masked">([^<]+)<', html).group(1)
    assert secret not in masked and masked.startswith(secret[:10])
    assert re.search(r"<details>\s*<summary>Reveal secret</summary>", html)
    assert f'data-testid="secret">{secret}<' in html
    assert "Rotate secret" in html and "hmac.compare_digest" in html


def test_settings_page_links_credentials(client, wh_alice):
    client.force_login(wh_alice)
    html = client.get("/settings/").content.decode()
    assert '<a href="/settings/credentials/">Provider credentials</a>' in html


def test_settings_page_needs_login(client, db):
    response = client.get("/settings/")
    assert response.status_code == 302 and "/login" in response["Location"]


def test_rotate_needs_confirmation(client, wh_alice):
    client.force_login(wh_alice)
    before = UserSettings.get_or_create_for(wh_alice).webhook_secret
    response = client.post("/settings/webhook-secret/rotate/", follow=True)
    assert "Tick the box to confirm" in response.content.decode()
    assert UserSettings.objects.get(user=wh_alice).webhook_secret == before


def test_rotate_changes_the_secret(client, wh_alice, wh_bob):
    client.force_login(wh_alice)
    before = UserSettings.get_or_create_for(wh_alice).webhook_secret
    bobs = UserSettings.get_or_create_for(wh_bob).webhook_secret
    response = client.post("/settings/webhook-secret/rotate/", {"confirm": "yes"}, follow=True)
    prefs = UserSettings.objects.get(user=wh_alice)
    assert prefs.webhook_secret != before and prefs.rotated_at is not None
    assert prefs.signing_secrets() == [prefs.webhook_secret, before]
    html = response.content.decode()
    assert "New signing secret created" in html and prefs.webhook_secret in html
    assert UserSettings.objects.get(user=wh_bob).webhook_secret == bobs


def test_rotate_is_post_only(client, wh_alice):
    client.force_login(wh_alice)
    assert client.get("/settings/webhook-secret/rotate/").status_code == 405


# --- send again -----------------------------------------------------------------------------------


def test_redeliver_button(client, wh_alice, make_job, enqueued, django_capture_on_commit_callbacks):
    job = make_job(status="partial", webhook_url="https://hooks.example.com/x")
    client.force_login(wh_alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/jobs/{job.public_id}/webhook/redeliver/")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.public_id}/"
    ((pk,),) = enqueued
    delivery = WebhookDelivery.objects.get(pk=pk)
    webhook_id = delivery.webhook_id
    assert (delivery.job, delivery.event_type) == (job, "job.partial")
    assert webhook_id.startswith("msg_")
    event = JobEvent.objects.get(job=job, type="webhook.redeliver")
    assert event.actor == "wh-alice" and event.data["webhook_id"] == webhook_id


def test_redeliver_button_on_unfinished_job(client, wh_alice, make_job, enqueued):
    job = make_job(status="processing", webhook_url="https://hooks.example.com/x")
    client.force_login(wh_alice)
    response = client.post(f"/jobs/{job.public_id}/webhook/redeliver/")
    assert response.status_code == 302
    (message,) = get_messages(response.wsgi_request)
    assert message.level_tag == "error" and "has not finished yet" in message.message
    assert enqueued == [] and not JobEvent.objects.filter(job=job).exists()


def test_redeliver_button_other_users_job_is_404(client, wh_bob, make_job, enqueued):
    job = make_job(webhook_url="https://hooks.example.com/x")
    client.force_login(wh_bob)
    assert client.post(f"/jobs/{job.public_id}/webhook/redeliver/").status_code == 404
    assert enqueued == []


def test_redeliver_api(wh_alice, wh_bob, make_job, enqueued, django_capture_on_commit_callbacks):
    job = make_job(status="failed", webhook_url="https://hooks.example.com/x")
    api = APIClient()
    url = f"/api/v1/jobs/{job.public_id}/webhook/redeliver"
    assert api.post(url).status_code in (401, 403)

    api.force_authenticate(wh_bob)
    response = api.post(url)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"

    api.force_authenticate(wh_alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(url)
    assert response.status_code == 202
    body = response.json()
    assert (
        body["type"] == "job.failed"
        and body["webhook_id"] == WebhookDelivery.objects.get(pk=enqueued[0][0]).webhook_id
    )


def test_redeliver_api_actor_names_user_and_key(
    wh_alice, make_job, enqueued, django_capture_on_commit_callbacks
):
    # The timeline names who sent it again as every other action does, not by the key's id.
    from apikeys.services import create_key

    job = make_job(status="completed", webhook_url="https://hooks.example.com/x")
    key, raw = create_key(wh_alice, "deploy bot")
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=raw)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/jobs/{job.public_id}/webhook/redeliver")
    assert response.status_code == 202
    event = JobEvent.objects.get(job=job, type="webhook.redeliver")
    assert event.actor == "wh-alice (API key deploy bot)"
    assert key.public_id not in event.actor


def test_redeliver_api_conflicts(wh_alice, make_job, enqueued):
    api = APIClient()
    api.force_authenticate(wh_alice)
    running = make_job(status="processing", webhook_url="https://hooks.example.com/x")
    response = api.post(f"/api/v1/jobs/{running.public_id}/webhook/redeliver")
    assert response.status_code == 409 and response.json()["error"]["code"] == "invalid_state"
    no_url = make_job(status="completed")
    response = api.post(f"/api/v1/jobs/{no_url.public_id}/webhook/redeliver")
    assert response.status_code == 409 and "no webhook URL" in response.json()["error"]["message"]
    assert enqueued == []


# --- in the project's own URLconf -----------------------------------------------------------------


def test_in_the_project_the_job_page_button_sends_again_and_shows_attempts(
    client,
    wh_alice,
    make_job,
    settings,
    receiver,
    run_task,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    settings.ROOT_URLCONF = "batchhub.urls"
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32"
    monkeypatch.setattr(deliver_webhook, "delay", lambda *args: run_task(*args))
    job = make_job(webhook_url=receiver.url)
    client.force_login(wh_alice)

    html = client.get("/settings/").content.decode()
    assert "Rotate secret" in html and 'href="/settings/credentials/"' in html

    page = client.get(f"/jobs/{job.public_id}/").content.decode()
    action = re.search(
        r'<form method="post" action="([^"]+)"[^>]*>\s*<input[^>]*>\s*'
        r"<button[^>]*>Send the webhook again",
        page,
    ).group(1)
    # The route is in the jobs namespace at the address it always had.
    assert action == f"/jobs/{job.public_id}/webhook/redeliver/"
    assert action == reverse("jobs:webhook-redeliver", args=[job.public_id])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.public_id}/"
    assert len(receiver.requests) == 1

    page = client.get(f"/jobs/{job.public_id}/").content.decode()
    assert f"POST {receiver.url} → 200 in" in page
    assert '<span class="event-type">Webhook delivered</span>' in page  # not "Webhook.delivered"
    assert "job.completed sent again" in page
