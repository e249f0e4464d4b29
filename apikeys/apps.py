from __future__ import annotations

from django.apps import AppConfig


class APIKeysConfig(AppConfig):
    name = "apikeys"
    verbose_name = "API keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            keycache,
            schema,  # noqa: F401  registers the OpenAPI auth extension
        )

        keycache.connect_signals()
