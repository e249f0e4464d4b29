"""The plaintext key is stored nowhere: not in any table, not in the session, not in a log line."""

from __future__ import annotations

import logging

from django.contrib.sessions.backends.db import SessionStore
from django.db import connection

from apikeys.models import APIKey


def _dump_database() -> str:
    """Every cell of every table as text (sessions decoded, since their data is encoded)."""
    parts: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for cell in row:
                    if isinstance(cell, (bytes, memoryview)):
                        cell = bytes(cell).decode("latin-1")
                    parts.append(str(cell))
            if table == "django_session":
                cursor.execute("SELECT session_data FROM django_session")
                parts.extend(str(SessionStore().decode(data)) for (data,) in cursor.fetchall())
    return "\n".join(parts)


def _created_keys(client_alice, api, caplog) -> list[str]:
    with caplog.at_level(logging.DEBUG):
        page = client_alice.post(
            "/keys/", {"name": "from the page", "expiry": "30"}
        ).content.decode()
        start = page.index('value="', page.index('id="new-key"')) + len('value="')
        from_page = page[start : page.index('"', start)]
        from_api = api.post(
            "/api/v1/keys",
            {"name": "from the api"},
            format="json",
            headers={"X-API-Key": from_page},
        ).json()["key"]
        # Use both, so last_used_at and any request logging have had their chance to write.
        assert api.get("/api/v1/keys", headers={"X-API-Key": from_api}).status_code == 200
        assert (
            api.get("/api/v1/keys", headers={"Authorization": f"Bearer {from_page}"}).status_code
            == 200
        )
        client_alice.get("/keys/")
    return [from_page, from_api]


def test_the_database_never_contains_the_plaintext_key(client_alice, api, caplog):
    keys = _created_keys(client_alice, api, caplog)
    dump = _dump_database()
    # The dump is able to find things: the public parts and digests are in it.
    for key in APIKey.objects.all():
        assert key.lookup_id in dump and key.digest in dump
    assert "from the page" in dump and "_auth_user_id" in dump  # a decoded session
    for raw in keys:
        secret = raw.split("_")[2]
        assert raw not in dump
        assert secret not in dump
        assert secret[:16] not in dump and secret[16:] not in dump


def test_no_log_line_contains_the_key(client_alice, api, caplog):
    keys = _created_keys(client_alice, api, caplog)
    # A failed attempt is logged by Django (401); the key it presented must not be.
    # The last character changed (a key that ends in "0" would otherwise be presented as is).
    wrong = keys[0][:-1] + ("1" if keys[0].endswith("0") else "0")
    with caplog.at_level(logging.DEBUG):
        response = api.get("/api/v1/keys", headers={"X-API-Key": wrong})
    assert response.status_code == 401
    assert caplog.records  # something was logged (SQL at DEBUG, the 401 warning)
    text = "\n".join(record.getMessage() for record in caplog.records)
    for raw in keys:
        assert raw.split("_")[2] not in text
