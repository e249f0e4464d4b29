"""Workers lower their CPU priority at start, their session's scheduling group included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import os
from pathlib import Path
from batchhub.priority import lower_priority
lower_priority({nice})
group = Path("/proc/self/autogroup")
print(os.getpriority(os.PRIO_PROCESS, 0), group.read_text().split()[-1] if group.exists() else "-")
"""

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="POSIX only")


def probe(nice: int, *, own_session: bool) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(nice=nice)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=own_session,
    ).stdout.split()
    return out[0], out[1]


def test_a_worker_leading_its_session_lowers_itself_and_its_group():
    process, group = probe(7, own_session=True)
    assert process == "7"
    assert group in ("7", "-")  # "-": no autogroups here (not Linux)


def test_a_worker_in_someone_elses_session_leaves_the_group_alone():
    before = (
        Path("/proc/self/autogroup").read_text().split()[-1]
        if Path("/proc/self/autogroup").exists()
        else "-"
    )
    process, group = probe(7, own_session=False)
    assert process == "7"
    assert group == before


def test_zero_changes_nothing():
    process, _group = probe(0, own_session=True)
    assert process == str(os.getpriority(os.PRIO_PROCESS, 0))
