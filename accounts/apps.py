from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """The person's own pages: sign-up, log in and out, settings, provider credentials.

    Their models (UserSettings, ProviderCredential) stay in jobs: the engine reads them.
    """

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import session_user

        session_user.connect_signals()
