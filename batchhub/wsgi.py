from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")


def _refuse_unusable_database() -> None:
    from batchhub.dbfile import database_problem

    problem = database_problem()
    if problem is None:
        return
    try:
        # Gunicorn prints this one and stops; any other error (SystemExit included) has its
        # master start the worker again, and fail again, in a loop.
        from gunicorn.errors import AppImportError as Refused
    except ImportError:
        from django.core.exceptions import ImproperlyConfigured as Refused
    raise Refused(problem)


_refuse_unusable_database()
application = get_wsgi_application()

from batchhub.staticfiles import log_if_not_collected  # noqa: E402  (needs Django set up)

log_if_not_collected()
