from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")

app = Celery("batchhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _lower_priority(**_kwargs) -> None:
    # In the main process, before the pool is forked: the pool processes inherit the priority.
    from django.conf import settings

    from .priority import lower_priority

    lower_priority(settings.BATCHHUB_WORKER_NICE)
