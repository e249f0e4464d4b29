"""What every in-process benchmark does first, in one place.

The project on sys.path, a throwaway data folder, a database (BENCH_DATABASE_URL, which
scripts/bench.sh gives each benchmark, else SQLite in that folder), an in-process cache and
broker, and Django set up. Import it before anything from the project.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_TMP: tempfile.TemporaryDirectory | None = None


def setup(prefix: str, **env: str) -> Path:
    """Configure and set up Django for a benchmark; returns its throwaway folder."""
    global _TMP
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _TMP = tempfile.TemporaryDirectory(prefix=prefix)
    tmp = Path(_TMP.name)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchhub.settings",
            "DATABASE_URL": (
                os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'bench.sqlite3'}"
            ),
            "BATCHHUB_DATA_DIR": str(tmp),  # nothing is written beside the project
            "CACHE_URL": "locmem",
            "CELERY_BROKER_URL": "memory://",
            # The stand-ins for outside services listen on loopback, which processors may not
            # reach unless allowed.
            "BATCHHUB_PROCESSOR_ALLOW_PRIVATE": "127.0.0.0/8",
            **env,
        }
    )
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-used-anywhere-else")
    import django

    django.setup()
    return tmp
