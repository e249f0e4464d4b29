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
words = group.read_text().split() if group.exists() else []
print(os.getpriority(os.PRIO_PROCESS, 0), words[-1] if words else "-")
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
    assert group in ("7", "-")  # "-": no autogroups here (not Linux, or disabled)


def own_group_nice() -> str:
    """This process's autogroup nice, or "-" where there is none to read.

    The file is missing off Linux, and empty for a process in the root group (a session that
    started at boot, as a CI runner's or a container's may be).
    """
    group = Path("/proc/self/autogroup")
    words = group.read_text().split() if group.exists() else []
    return words[-1] if words else "-"


def test_a_worker_in_someone_elses_session_leaves_the_group_alone():
    before = own_group_nice()
    process, group = probe(7, own_session=False)
    assert process == "7"
    assert group == before


def test_zero_changes_nothing():
    process, _group = probe(0, own_session=True)
    assert process == str(os.getpriority(os.PRIO_PROCESS, 0))


def test_a_session_in_the_root_group_runs_at_nice_alone(tmp_path):
    # A session begun at boot (a CI runner's, a container's) is in the root group, whose
    # /proc/self/autogroup is empty; the worker must still start, at its nice, and write nothing.
    empty = tmp_path / "autogroup"
    empty.write_text("")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, pathlib, sys\n"
            "import batchhub.priority as priority\n"
            "priority.AUTOGROUP = pathlib.Path(sys.argv[1])\n"
            "priority.lower_priority(7)\n"
            "print(os.getpriority(os.PRIO_PROCESS, 0))\n",
            str(empty),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    assert out.stdout.split() == ["7"]
    assert empty.read_text() == ""
