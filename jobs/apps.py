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
        # So does a BATCHHUB_PROCESSORS entry that names no processor: web, worker and manage.py
        # all stop with the entry in the message, instead of a job finding it missing.
        from .processors.base import check_configured

        check_configured()
        # The project's own system checks (`manage.py check --deploy`).
        import batchhub.checks  # noqa: F401

        # Registers the tasks that jobs/enqueue.py sends by name, in the web process too.
        from . import tasks  # noqa: F401
