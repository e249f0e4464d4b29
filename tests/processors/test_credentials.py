from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from jobs import credentials
from jobs.models import ProviderCredential

SECRET = "sk-proj-PLAINTEXT-never-stored-7Qx9"

pytestmark = pytest.mark.django_db


def all_database_text() -> str:
    """Every value of every column of the credential table, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ProviderCredential._meta.db_table}")
        return " ".join(str(value) for row in cursor.fetchall() for value in row)


def test_secret_is_encrypted_at_rest_and_decrypts(alice):
    credentials.save_credential(alice, "openai", SECRET)
    stored = all_database_text()
    assert "openai" in stored
    assert SECRET not in stored and "PLAINTEXT" not in stored
    assert credentials.get_secret(alice.pk, "openai") == SECRET
    assert credentials.list_credentials(alice)[0].hint == "…7Qx9"


def test_replace_keeps_one_row_and_other_users_are_separate(alice, bob):
    _, created = credentials.save_credential(alice, "openai", SECRET)
    assert created
    _, created = credentials.save_credential(alice, "OpenAI", "sk-second-secret-value-0000")
    assert not created
    assert ProviderCredential.objects.filter(owner=alice).count() == 1
    assert credentials.get_secret(alice.pk, "openai") == "sk-second-secret-value-0000"
    with pytest.raises(credentials.CredentialError):
        credentials.get_secret(bob.pk, "openai")


def test_a_changed_key_makes_secrets_unreadable_not_wrong(alice, settings):
    credentials.save_credential(alice, "openai", SECRET)
    settings.SECRET_KEY = "a-completely-different-secret-key-for-this-test"
    assert credentials.list_credentials(alice)[0].readable is False
    with pytest.raises(credentials.CredentialError, match="cannot be decrypted"):
        credentials.get_secret(alice.pk, "openai")


def test_rotation_through_secret_key_fallbacks(alice, settings):
    old = settings.SECRET_KEY
    credentials.save_credential(alice, "openai", SECRET)
    settings.SECRET_KEY = "the-new-secret-key-after-rotation-0123456789"
    settings.SECRET_KEY_FALLBACKS = [old]
    assert credentials.get_secret(alice.pk, "openai") == SECRET


def test_explicit_encryption_key(alice, settings):
    settings.BATCHHUB_ENCRYPTION_KEY = "a long passphrase the operator chose for credentials"
    credentials.save_credential(alice, "vllm", SECRET)
    settings.SECRET_KEY = "another-secret-key-that-does-not-matter-now-12345"
    assert credentials.get_secret(alice.pk, "vllm") == SECRET


@pytest.mark.parametrize("name", ["", "Has Space", "-dash", "x" * 51, "a/b"])
def test_bad_names(alice, name):
    with pytest.raises(credentials.CredentialError):
        credentials.save_credential(alice, name, SECRET)


def test_page_adds_lists_masked_and_never_echoes(client_alice):
    url = reverse("credentials")
    response = client_alice.post(url, {"name": "openai", "secret": SECRET}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Saved credential “openai”." in page
    assert "<code>openai</code>" in page and "…7Qx9" in page
    assert SECRET not in page


def test_page_form_errors_do_not_send_the_secret_back(client_alice):
    response = client_alice.post(reverse("credentials"), {"name": "Bad Name!", "secret": SECRET})
    assert response.status_code == 400
    page = response.content.decode()
    assert "A credential name has 1–50 lowercase letters" in page
    assert SECRET not in page


def test_delete_is_per_user(client_alice, client_bob, alice):
    credentials.save_credential(alice, "openai", SECRET)
    delete_url = reverse("credential_delete", args=["openai"])
    assert client_bob.post(delete_url).status_code == 404
    assert ProviderCredential.objects.filter(owner=alice).exists()
    assert client_alice.get(delete_url).status_code == 405
    response = client_alice.post(delete_url, follow=True)
    assert "Deleted credential “openai”." in response.content.decode()
    assert not ProviderCredential.objects.filter(owner=alice).exists()


def test_page_needs_login(client):
    response = client.get(reverse("credentials"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
