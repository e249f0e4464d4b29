"""The test suite's settings (pyproject's DJANGO_SETTINGS_MODULE): the project's settings as
BATCHHUB_TESTING=1 gives them.

The variable is set for this import only, so a process a test starts (a celery worker, a live
server, `manage.py check --deploy`) runs with the real settings; one that sets BATCHHUB_TESTING=0
itself keeps it.
"""

from __future__ import annotations

import os
import re

_given = os.environ.get("BATCHHUB_TESTING")
os.environ["BATCHHUB_TESTING"] = _given or "1"

# Parallel test processes sharing one Redis would clear each other's rate-limit counters (the API
# tests' fixture empties the cache): each takes a database of its own, in the environment so the
# workers and servers its tests start share it.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_cache = os.environ.get("CACHE_URL", "")
if _worker.startswith("gw") and re.match(r"rediss?://[^/]*(/\d*)?$", _cache):
    _db = 3 + int(_worker[2:]) % 13  # 0-2 are the broker's, the cache's and REDIS_URL's
    os.environ["CACHE_URL"] = re.sub(r"(/\d*)?$", f"/{_db}", _cache, count=1)

try:
    from .settings import *  # noqa: E402,F403
finally:
    if _given is None:
        del os.environ["BATCHHUB_TESTING"]
