"""POST one large JSON `rows` body through the API in a fresh process; print time and peak RSS.

`python -m tests.support.rows_body_probe PATH MB [FIELD]` (PATH: `jobs` or `jobs/validate`; FIELD:
`rows`, the default, or `documents`) prints
{"path", "body_mb", "rows", "status", "seconds", "peak_growth_mb"} as JSON. A fresh process with
its own SQLite database under BATCHHUB_DATA_DIR (the caller's temporary folder), so the peak is
this request's alone: the peak RSS (VmHWM) is reset after a warm-up request, then read again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _reset_peak() -> int:
    # Writing 5 to clear_refs sets the peak (VmHWM) back to the RSS now (Linux).
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def body_of(megabytes: float, field: str = "rows") -> tuple[bytes, int]:
    """A body of small rows, the most objects per byte: what a parse builds the most of."""
    head = b'{"processor": "template", "params": {"template": "{t}"}, "%s": [' % field.encode()
    target = int(megabytes * (1 << 20))
    count = (target - len(head)) // len(b'{"t": "r0000000"}, ')
    rows = b", ".join(b'{"t": "r%07d"}' % i for i in range(count))
    return head + rows + b"]}", count


def main(path: str, megabytes: float, field: str = "rows") -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("probe", password="x" * 20)
    client = APIClient(SERVER_NAME="127.0.0.1")
    client.force_authenticate(user)
    url = f"/api/v1/{path}"
    body, count = body_of(megabytes, field)
    warm, _ = body_of(0.01, field)
    client.post(url, warm, content_type="application/json")  # imports, caches, connections
    from jobs.models import Job

    Job.objects.all().delete()
    baseline = _reset_peak()
    started = time.monotonic()
    response = client.post(url, body, content_type="application/json")
    seconds = time.monotonic() - started
    peak = _status_kb("VmHWM")
    answer = response.json()
    print(
        json.dumps(
            {
                "path": path,
                "body_mb": round(len(body) / (1 << 20), 2),
                "rows": count,
                "status": response.status_code,
                "row_count": answer.get("row_count") if isinstance(answer, dict) else None,
                "error": (answer.get("error") or {}).get("message")
                if isinstance(answer, dict)
                else None,
                "seconds": round(seconds, 2),
                "baseline_mb": round(baseline / 1024, 1),
                "peak_growth_mb": round((peak - baseline) / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), *sys.argv[3:])
