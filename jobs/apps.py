from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A malformed BATCHHUB_*_ALLOW_PRIVATE stops start-up instead of the first request.
        from .ssrf import PROCESSORS, WEBHOOKS, allowlist

        allowlist(WEBHOOKS)
        allowlist(PROCESSORS)
        # Registers the tasks that jobs/enqueue.py sends by name, in the web process too.
        from . import tasks  # noqa: F401
