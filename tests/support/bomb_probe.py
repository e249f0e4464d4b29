"""Run one hostile input through ingest.validate in a fresh process; print time and RSS growth.

`python -m tests.support.bomb_probe KIND` prints {"kind", "seconds", "rss_growth_mb", "valid",
"message", "stopped_by"} as JSON. A fresh process, so the peak RSS (ru_maxrss) is this input's
alone.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import sys
import time


def _bomb(block: bytes, repeat: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    # Concatenated gzip members read as one stream: a gigabyte costs milliseconds to build.
    member = gzip.compress(block, 9)
    return gzip.compress(head, 9) + member * repeat + gzip.compress(tail, 9)


MB = 1 << 20
BOMBS = {
    # 300 MB in one CSV line, 0.3 MB gzipped.
    "csv_line": lambda: ("in.csv.gz", _bomb(b"x" * MB, 300, b"name,text\nann,hi\n", b"\n")),
    # The same in a JSONL line.
    "jsonl_line": lambda: ("in.jsonl.gz", _bomb(b"x" * MB, 300, b'{"a": "b"}\n{"a": "', b'"}\n')),
    # 1.1 GB of blank lines, 1.1 MB gzipped.
    "blank_lines": lambda: ("in.csv.gz", _bomb(b"\n" * MB, 1100, b"name,text\nann,hi\n")),
    # 1.1 GB of rows within every per-row limit: only the decompressed total stops it.
    "long_rows": lambda: ("in.csv.gz", _bomb((b"x" * 100_000 + b"\n") * 10, 1100, b"name\n")),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def main(kind: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")
    import django

    django.setup()
    from jobs import ingest

    name, body = BOMBS[kind]()
    fileobj = io.BytesIO(body)
    ingest.validate(io.BytesIO(b"name\nann\n"), filename="warm.csv")  # imports, caches
    before = _rss_mb()
    started = time.monotonic()
    report = ingest.validate(fileobj, filename=name)
    seconds = time.monotonic() - started
    growth = _rss_mb() - before
    message = report.errors[-1]["message"] if report.errors else ""
    print(
        json.dumps(
            {
                "kind": kind,
                "compressed_mb": round(len(body) / MB, 2),
                "seconds": round(seconds, 2),
                "rss_growth_mb": round(growth, 1),
                "valid": report.valid,
                "message": message,
                "stopped_by": report.stopped_by and report.stopped_by.kind,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
