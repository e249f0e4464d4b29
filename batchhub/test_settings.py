"""The test suite's settings (pyproject's DJANGO_SETTINGS_MODULE): the project's settings as
BATCHHUB_TESTING=1 gives them.

The variable is set for this import only, so a process a test starts (a celery worker, a live
server, `manage.py check --deploy`) runs with the real settings; one that sets BATCHHUB_TESTING=0
itself keeps it.
"""

from __future__ import annotations

import os

_given = os.environ.get("BATCHHUB_TESTING")
os.environ["BATCHHUB_TESTING"] = _given or "1"
try:
    from .settings import *  # noqa: E402,F403
finally:
    if _given is None:
        del os.environ["BATCHHUB_TESTING"]
