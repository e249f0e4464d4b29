"""Line and decompression bombs are refused in seconds with little memory, in a fresh process.

Each bomb runs through ingest.validate in its own interpreter (tests/support/bomb_probe.py) so
that the peak RSS it reports belongs to that input alone, not to whatever this test process did
before. The bounds are the issue's: under 5 s and under 50 MB of RSS growth, on a loaded machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def probe(kind: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["DJANGO_SETTINGS_MODULE"] = "batchhub.settings"
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.bomb_probe", kind],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("csv_line", "Line 3 is longer than 1.0 MB"),
        ("jsonl_line", "Line 2 is longer than 8.0 MB"),
        ("blank_lines", "more than 1,000,000 blank lines"),
        ("long_rows", "decompresses to more than 100.0 MB"),
    ],
)
def test_bomb_is_refused_fast_in_little_memory(kind, words):
    result = probe(kind)
    assert result["valid"] is False
    assert words in result["message"], result
    # The bound that stopped it is told apart from the file's problems (the API's 413 needs it).
    stopped = {"csv_line": "line", "jsonl_line": "line", "blank_lines": "blank"}.get(kind, "bytes")
    assert result["stopped_by"] == stopped, result
    assert result["seconds"] < 5, result
    assert result["rss_growth_mb"] < 50, result
