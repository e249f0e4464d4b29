"""Benchmark: what incremental auto-vacuum costs the embedded default, and what giving space back
holds (batchhub/dbspace.py).

Run: `python tests/bench/bench_sqlite_space.py` (SQLite only; BENCH_SQLITE_ROWS sets a job's
rows, default 100,000; BENCH_SPACE_REPEATS the A/B pairs, default 3).

Each pair runs two child processes, one database file each, in alternating order: one made as
the release before made it (auto_vacuum NONE), one as `migrate` makes it now (INCREMENTAL).
In each, three `template` jobs of the same generated CSV (bench_engine's) are ingested
(`loading.ingest`) and processed in this process (`runner.work_once` steps, two jobs' steps
taken in turn so their pages interleave, as on a site with several jobs), timed; then the first
two are deleted, which leaves the third's pages at the file's end to be moved. The INCREMENTAL
file then gives its space back with the beat's step (`dbspace.give_back`): the longest time one
slice held the write lock, and the time it took. The NONE file is compacted with
`dbspace.compact` (VACUUM): the time writes waited, and its rate over the data in use.
One JSON line per figure: INCREMENTAL's ingest and processing rates against NONE's (the median
pair ratio, each pair's given), the slices' longest hold, VACUUM's rate.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_sqlite import ROWS, emit  # noqa: E402  (one JSON line's shape)
from tests.bench.benchdata import TEMPLATE, make_csv  # noqa: E402

REPEATS = int(os.environ.get("BENCH_SPACE_REPEATS") or 3)
JOBS = 3


def child(mode: str, tmp: Path, csv: Path) -> dict:
    data = tmp / mode
    data.mkdir()
    db = data / "batchhub.sqlite3"
    if mode == "none":
        made = sqlite3.connect(db)
        made.execute("PRAGMA user_version=0")  # the first page, without auto-vacuum
        made.close()
    os.environ.update(
        {
            "BATCHHUB_DATA_DIR": str(data),
            "DJANGO_SETTINGS_MODULE": "batchhub.settings",
            "BATCHHUB_TESTING": "0",
            "DATABASE_URL": f"sqlite:///{db}",
            "MEDIA_ROOT": str(data / "media"),
            "BATCHHUB_MAX_ROWS": str(max(ROWS, 1_000_000)),
        }
    )
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.management import call_command

    from batchhub import dbspace
    from jobs import chunks, creation, enqueue, runner, services
    from jobs.ingest import loading
    from jobs.models import Chunk, Job, JobStatus

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", "b@example.com", "bench-password-1")
    enqueue.start_ingest = lambda job_pk: None
    chunks.start_loops = lambda job: None
    jobs = []
    ingest_s = 0.0
    for _ in range(JOBS):
        with csv.open("rb") as fh:
            job, _ = creation.create_job(
                user, processor="template", params={"template": TEMPLATE},
                source=creation.Source(upload=File(fh, name=csv.name)), concurrency=2,
                actor="bench",
            )
        began = time.perf_counter()
        loading.ingest(job.pk)
        ingest_s += time.perf_counter() - began
        jobs.append(job)
    began = time.perf_counter()
    active = list(jobs)
    while active:
        for job in list(active):
            if Job.objects.get(pk=job.pk).status != JobStatus.PROCESSING:
                active.remove(job)
                continue
            if runner.work_once(job.pk, seconds=0.5).action == "stop":
                Chunk.objects.filter(job_id=job.pk).update(lease_until=None)
    process_s = time.perf_counter() - began
    for job in jobs:
        job = Job.objects.get(pk=job.pk)
        assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS, job.counts
    full = dbspace.space()
    for job in jobs[:-1]:
        services.delete(Job.objects.get(pk=job.pk), actor="bench")
    deleted = dbspace.space()
    figures = {
        "ingest_s": ingest_s, "process_s": process_s, "full_mb": full.file_bytes / 2**20,
        "deleted_free_mb": deleted.free_bytes / 2**20, "used_mb": deleted.used_bytes / 2**20,
    }
    began = time.perf_counter()
    if mode == "none":
        figures["vacuum_held_s"] = dbspace.compact()
    else:
        longest = 0.0
        while (given := dbspace.give_back()).pages:
            longest = max(longest, given.longest_hold)
        figures["slice_longest_ms"] = longest * 1000
    figures["give_back_s"] = time.perf_counter() - began
    after = dbspace.space()
    figures.update(after_mb=after.file_bytes / 2**20, wal_after_mb=after.wal_bytes / 2**20)
    return figures


def run_child(mode: str, tmp: Path, csv: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(tmp), str(csv)],
        capture_output=True, text=True, cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    pairs = []
    with tempfile.TemporaryDirectory(prefix="bench-space-") as name:
        tmp = Path(name)
        csv = tmp / "in.csv"
        make_csv(csv, ROWS)
        for repeat in range(REPEATS):
            order = ("none", "incremental") if repeat % 2 == 0 else ("incremental", "none")
            runs = {}
            for mode in order:
                folder = tmp / f"r{repeat}"
                folder.mkdir(exist_ok=True)
                runs[mode] = run_child(mode, folder, csv)
            pairs.append(runs)
    rows = JOBS * ROWS
    for what in ("ingest", "process"):
        # Same rows both ways: the rate ratio is NONE's time over INCREMENTAL's.
        ratios = [p["none"][f"{what}_s"] / p["incremental"][f"{what}_s"] for p in pairs]
        rates = [rows / p["incremental"][f"{what}_s"] for p in pairs]
        emit(f"sqlite_incremental_vacuum_{what}", statistics.median(rates), "rows/s",
             "auto_vacuum_none", statistics.median(rows / p["none"][f"{what}_s"] for p in pairs),
             "none (what incremental auto-vacuum costs)",
             pair_ratios=[round(r, 3) for r in ratios], median_pair_ratio=round(
                 statistics.median(ratios), 3))
    emit("sqlite_give_back_slice_hold_max", max(p["incremental"]["slice_longest_ms"]
         for p in pairs), "ms", None, None, "< 200 ms (a writer waiting for a slice)",
         runs_ms=[round(p["incremental"]["slice_longest_ms"], 1) for p in pairs],
         freed_mb=[round(p["incremental"]["deleted_free_mb"], 1) for p in pairs],
         seconds=[round(p["incremental"]["give_back_s"], 2) for p in pairs],
         file_mb_before_after=[(round(p["incremental"]["full_mb"], 1),
                                round(p["incremental"]["after_mb"], 1)) for p in pairs])
    emit("sqlite_vacuum_rate", statistics.median(p["none"]["used_mb"] / p["none"]["vacuum_held_s"]
         for p in pairs), "MB/s", None, None,
         "none (compact_database's estimate takes 60 MB/s)",
         held_s=[round(p["none"]["vacuum_held_s"], 2) for p in pairs],
         used_mb=[round(p["none"]["used_mb"], 1) for p in pairs],
         file_mb_before_after=[(round(p["none"]["full_mb"], 1), round(p["none"]["after_mb"], 1))
                               for p in pairs])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))), flush=True)
    else:
        main()
