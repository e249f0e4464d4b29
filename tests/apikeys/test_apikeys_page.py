"""The API keys page, as a browser without JavaScript and as htmx see it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apikeys import keyformat, services
from apikeys.models import APIKey

PAGE = "/keys/"
HTMX = {"HX-Request": "true"}


def _created_key(response) -> str:
    """The key shown in the readonly input of the new-key panel."""
    html = response.content.decode()
    start = html.index('id="new-key"')
    value = html.index('value="', start) + len('value="')
    return html[value : html.index('"', value)]


def test_login_is_required(client, db):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert client.post(PAGE, {"name": "x", "expiry": "never"}).status_code == 302
    assert not APIKey.objects.exists()


def test_empty_page_has_the_form_the_usage_block_and_the_nav_entry(client_alice):
    response = client_alice.get(PAGE)
    html = response.content.decode()
    assert response.status_code == 200
    assert "You have no API keys yet." in html
    assert 'name="name"' in html and 'name="expiry"' in html
    for label in ("Never", "30 days", "90 days", "365 days"):
        assert f">{label}</option>" in html
    assert f'href="{PAGE}" aria-current="page">API keys</a>' in html
    # The curl example names this site's absolute URL.
    assert 'curl -H "Authorization: Bearer $BATCHHUB_API_KEY" http://testserver/api/v1/jobs' in html


def test_the_key_is_shown_once(client_alice, alice):
    response = client_alice.post(PAGE, {"name": "nightly import", "expiry": "never"})
    # Rendered straight into the POST response, no redirect that would have to carry it.
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    raw = _created_key(response)
    key = APIKey.objects.get(owner=alice)
    assert services.authenticate_key(raw) == key
    assert "It will not be shown again." in html
    assert "readonly" in html[html.index('id="new-key"') - 200 : html.index('id="new-key"') + 200]
    assert 'data-copy-target="new-key"' in html
    assert "It does not expire." in html

    again = client_alice.get(PAGE)
    page = again.content.decode()
    assert raw not in page
    assert raw.split("_")[2] not in page
    assert "It will not be shown again." not in page
    assert key.prefix in page and "nightly import" in page

    # Nor did it go anywhere the browser keeps.
    assert raw not in str(client_alice.session.items())
    assert all(raw not in morsel.value for morsel in client_alice.cookies.values())
    assert all(raw not in morsel.value for morsel in response.cookies.values())
    assert raw not in response.get("Location", "")


def test_create_with_htmx_swaps_only_the_section(client_alice, alice):
    response = client_alice.post(PAGE, {"name": "ci", "expiry": "30"}, headers=HTMX)
    assert response.status_code == 201
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="keys-section">')
    assert "<html" not in html and "How to use a key" not in html
    raw = _created_key(response)
    key = APIKey.objects.get(owner=alice)
    assert services.authenticate_key(raw) == key
    assert timedelta(days=29, hours=23) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert "It expires on" in html
    assert raw not in client_alice.get(PAGE).content.decode()


@pytest.mark.parametrize(("days", "expected"), [("never", None), ("90", 90), ("365", 365)])
def test_expiry_choices(client_alice, alice, days, expected):
    assert client_alice.post(PAGE, {"name": "k", "expiry": days}).status_code == 201
    key = APIKey.objects.get(owner=alice)
    if expected is None:
        assert key.expires_at is None
    else:
        assert abs((key.expires_at - timezone.now()) - timedelta(days=expected)) < timedelta(
            minutes=1
        )


def test_invalid_form_shows_errors_and_creates_nothing(client_alice):
    response = client_alice.post(PAGE, {"name": "", "expiry": "never"})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert "new-key" not in response.content.decode()
    assert client_alice.post(PAGE, {"name": "x", "expiry": "7"}).status_code == 400
    # htmx 2 does not swap a 4xx, so the htmx request gets the errors with a 200.
    swapped = client_alice.post(PAGE, {"name": "x" * 101, "expiry": "never"}, headers=HTMX)
    assert swapped.status_code == 200
    assert "at most 100 characters" in swapped.content.decode()
    assert not APIKey.objects.exists()


def test_the_table_shows_each_keys_details_and_status(client_alice, alice):
    active, _ = services.create_key(alice, "active one", timezone.now() + timedelta(days=3))
    expired, _ = services.create_key(alice, "expired one", timezone.now() + timedelta(days=1))
    APIKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    revoked, raw = services.create_key(alice, "revoked one")
    services.authenticate_key(raw)
    services.revoke_key(alice, revoked.public_id)
    services.create_key(alice, "<script>alert(1)</script>")

    html = client_alice.get(PAGE).content.decode()
    for key, status in ((active, "Active"), (expired, "Expired"), (revoked, "Revoked")):
        row = html[html.index(f'id="key-{key.public_id}"') :]
        row = row[: row.index("</tr>")]
        assert key.prefix in row and key.name in row
        assert f'badge-{status.lower()}">{status}</span>' in row
        assert ("Revoke" in row.split("</span>", 1)[1]) is (status != "Revoked")
    revoked_row = html[html.index(f'id="key-{revoked.public_id}"') :]
    assert "never" not in revoked_row[: revoked_row.index("</tr>")].split("<td>")[3]  # last used
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_revoke_without_javascript_confirms_first(client_alice, alice, key_a, api):
    key, raw = key_a
    revoke_url = f"/keys/{key.public_id}/revoke"
    assert f'href="{revoke_url}"' in client_alice.get(PAGE).content.decode()

    confirm = client_alice.get(revoke_url)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Revoke “alice-script”?" in html and key.prefix in html
    assert f'<form method="post" action="{revoke_url}">' in html
    key.refresh_from_db()
    assert key.revoked_at is None  # the GET changed nothing

    response = client_alice.post(revoke_url, follow=True)
    assert response.redirect_chain == [(PAGE, 302)]
    html = response.content.decode()
    assert f"Revoked “alice-script” ({key.prefix})." in html
    assert 'badge-revoked">Revoked</span>' in html
    # …and the key stops working at once.
    assert api.get("/api/v1/keys", headers={"X-API-Key": raw}).status_code == 401


def test_revoke_with_htmx_swaps_the_row(client_alice, key_a, api):
    key, raw = key_a
    page = client_alice.get(PAGE).content.decode()
    assert f'hx-post="/keys/{key.public_id}/revoke"' in page
    assert 'hx-confirm="Revoke “alice-script”?' in page

    response = client_alice.post(f"/keys/{key.public_id}/revoke", headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode().strip()
    assert html.startswith(f'<tr id="key-{key.public_id}"') and html.endswith("</tr>")
    assert 'badge-revoked">Revoked</span>' in html and "hx-post" not in html
    assert api.get("/api/v1/keys", headers={"Authorization": f"Bearer {raw}"}).status_code == 401


def test_bob_cannot_see_or_revoke_alices_keys_on_the_page(client, key_a, bob):
    key, raw = key_a
    client.force_login(bob)
    html = client.get(PAGE).content.decode()
    assert key.prefix not in html and "alice-script" not in html
    assert client.get(f"/keys/{key.public_id}/revoke").status_code == 404
    assert client.post(f"/keys/{key.public_id}/revoke").status_code == 404
    assert client.post(f"/keys/{key.public_id}/revoke", headers=HTMX).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    assert services.authenticate_key(raw) == key


def test_the_page_is_never_cached(client_alice):
    assert "no-store" in client_alice.get(PAGE)["Cache-Control"]


def test_a_created_key_is_well_formed(client_alice):
    raw = _created_key(client_alice.post(PAGE, {"name": "k", "expiry": "never"}))
    assert keyformat.parse(raw) is not None
