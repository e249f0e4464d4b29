from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apikeys import services
from apikeys.models import APIKey


@pytest.fixture
def admin_client_(client, db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_the_changelist_shows_keys_but_never_the_digest(admin_client_, key_a):
    key, raw = key_a
    html = admin_client_.get("/admin/apikeys/apikey/").content.decode()
    assert "alice-script" in html and key.prefix in html and "alice" in html
    assert key.digest not in html and raw.split("_")[2] not in html


def test_the_detail_page_shows_no_digest_and_edits_nothing(admin_client_, key_a):
    key, _ = key_a
    response = admin_client_.get(f"/admin/apikeys/apikey/{key.pk}/change/")
    html = response.content.decode()
    assert response.status_code == 200
    assert key.prefix in html
    assert key.digest not in html and "Digest" not in html
    assert 'name="name"' not in html  # read-only
    admin_client_.post(
        f"/admin/apikeys/apikey/{key.pk}/change/", {"name": "renamed", "digest": "0" * 64}
    )
    key.refresh_from_db()
    assert key.name == "alice-script" and key.digest != "0" * 64


def test_keys_cannot_be_added_in_the_admin(admin_client_):
    assert admin_client_.get("/admin/apikeys/apikey/add/").status_code == 403


def test_revoke_selected(admin_client_, key_a, key_b, alice):
    (a, raw_a), (b, raw_b) = key_a, key_b
    spare, raw_spare = services.create_key(alice, "spare")
    response = admin_client_.post(
        "/admin/apikeys/apikey/",
        {"action": "revoke_selected", "_selected_action": [a.pk, b.pk]},
        follow=True,
    )
    assert "Revoked 2 API key(s)." in response.content.decode()
    assert services.authenticate_key(raw_a) is None and services.authenticate_key(raw_b) is None
    assert services.authenticate_key(raw_spare) == spare
    assert set(APIKey.objects.filter(revoked_at__isnull=False)) == {a, b}
