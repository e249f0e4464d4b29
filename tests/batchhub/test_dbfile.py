"""Every process stops in one line on an unusable SQLite file, before Django's checks open it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

# Each test starts processes on a SQLite file of its own: once, in the SQLite pass of the suite.
pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the embedded default's file; run in the SQLite pass"
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def a_directory(path: Path) -> None:
    path.mkdir()


def not_a_database(path: Path) -> None:
    path.write_text("id,name\n1,alice\n")


def damaged(path: Path) -> None:
    # SQLite's header, then a page size no database has.
    path.write_bytes(b"SQLite format 3\x00" + b"\x00\x07" + b"\xff" * 4000)


def folder_is_a_file(path: Path) -> None:
    path.parent.rmdir()
    path.parent.write_text("")


def unwritable_folder(path: Path) -> None:
    path.parent.chmod(0o555)


def unreadable_file(path: Path) -> None:
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    path.chmod(0o200)


UNUSABLE = {
    "a directory": (a_directory, "it is a directory, not a file"),
    "not a database": (not_a_database, "it is not a SQLite database"),
    "damaged": (damaged, "it is damaged (file is not a database)"),
    "folder is a file": (folder_is_a_file, "is not a directory"),
    "unwritable folder": (unwritable_folder, "is not writable by this user"),
    "unreadable file": (unreadable_file, "it is not readable by this user"),
}
NEEDS_PERMISSIONS = {"unwritable folder", "unreadable file"}


def as_unprivileged(cmd: list[str], case: str) -> list[str]:
    """The command, subject to file permissions even when the tests run as root."""
    if case not in NEEDS_PERMISSIONS or os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("as root, file permissions need setpriv (util-linux) to drop the override")
    # Still uid 0, so the interpreter and the project stay readable; without these two
    # capabilities, root obeys a file's mode like its owner does.
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]


def run(cmd: list[str], tmp_path: Path, case: str) -> tuple[int, str, Path]:
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "batchhub.sqlite3"
    make, _ = UNUSABLE[case]
    make(db)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "batchhub.settings", "BATCHHUB_TESTING": "0"}
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):  # the embedded default's, under the data dir
        env.pop(name, None)
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{db}",
            "BATCHHUB_DATA_DIR": str(tmp_path / "data"),
            "SECRET_KEY": "a-test-key-long-enough-to-sign-anything-it-is-asked-to",
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path),
        }
    )
    try:
        done = subprocess.run(
            as_unprivileged(cmd, case),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        if db.parent.is_dir():
            db.parent.chmod(0o755)  # so that the temporary directory can be removed
    return done.returncode, done.stdout + done.stderr, db


def assert_refused_in_one_line(returncode: int, output: str, db: Path, case: str) -> None:
    _, cause = UNUSABLE[case]
    assert returncode != 0, output[-2000:]
    line = f"The database file {db} cannot be used (DATABASE_URL): "
    said = [text for text in output.splitlines() if text.startswith(line)]
    assert said and cause in said[0], output[-2000:]
    assert "Traceback" not in output, output[-2000:]


@pytest.mark.parametrize("case", sorted(set(UNUSABLE) - NEEDS_PERMISSIONS))
def test_each_unusable_file_is_named_with_its_cause(tmp_path, case):
    from batchhub.dbfile import sqlite_problem

    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "batchhub.sqlite3"
    make, cause = UNUSABLE[case]
    make(db)
    said = sqlite_problem({"ENGINE": "batchhub.sqlite3", "NAME": str(db)})
    assert said.startswith(f"The database file {db} cannot be used (DATABASE_URL): ")
    assert cause in said


# Each process below is started for one cause of each kind (the file's content, the user's
# permissions): every cause goes through the same check, named above.
@pytest.mark.parametrize("case", ["not a database", "unwritable folder"])
def test_a_worker_on_an_unusable_sqlite_file_stops_saying_why(tmp_path, case):
    worker = [
        sys.executable, "-m", "celery", "-A", "batchhub", "worker", "--concurrency=1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    returncode, output, db = run(worker, tmp_path, case)
    assert_refused_in_one_line(returncode, output, db, case)
    assert " ready." not in output


@pytest.mark.parametrize("case", ["a directory", "unreadable file"])
def test_migrate_on_an_unusable_sqlite_file_stops_saying_why(tmp_path, case):
    # The first step of `make run`.
    migrate = [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"]
    returncode, output, db = run(migrate, tmp_path, case)
    assert_refused_in_one_line(returncode, output, db, case)


@pytest.mark.parametrize(
    "command", [["help"], ["migrate", "--help"], ["collectstatic", "--noinput", "--dry-run"]]
)
def test_commands_that_never_open_the_database_still_run_on_an_unusable_file(tmp_path, command):
    # The operator repairing the file still gets help, and a release can still collect its files.
    returncode, output, db = run(
        [sys.executable, str(ROOT / "manage.py"), *command], tmp_path, "a directory"
    )
    assert returncode == 0, output[-2000:]
    assert "cannot be used" not in output
    assert "Traceback" not in output, output[-2000:]


def test_which_manage_py_commands_open_the_database():
    from batchhub.dbfile import needs_database

    for argv in (["manage.py", "migrate"], ["manage.py", "shell"], ["manage.py", "recover_work"]):
        assert needs_database(argv), argv
    for argv in (
        ["manage.py"],
        ["manage.py", "--help"],
        ["manage.py", "help", "migrate"],
        ["manage.py", "migrate", "-h"],
        ["manage.py", "collectstatic", "--noinput"],
        ["manage.py", "version"],
    ):
        assert not needs_database(argv), argv


def test_beat_on_an_unusable_sqlite_file_stops_saying_why(tmp_path):
    beat = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "batchhub",
        "beat",
        "--schedule",
        str(tmp_path / "s"),
    ]
    returncode, output, db = run(beat, tmp_path, "not a database")
    assert_refused_in_one_line(returncode, output, db, "not a database")


def test_the_web_on_an_unusable_sqlite_file_stops_instead_of_booting_workers_in_a_loop(tmp_path):
    # One web worker: with several, gunicorn's arbiter can meet a second worker's load error
    # while it halts for the first, and prints its own traceback after our line (its race).
    web = [
        str(BIN / "gunicorn"), "batchhub.wsgi", "--bind", "127.0.0.1:0", "--workers", "1",
        "--no-control-socket",
    ]  # fmt: skip
    returncode, output, db = run(web, tmp_path, "a directory")
    assert_refused_in_one_line(returncode, output, db, "a directory")
    assert "App failed to load." in output


def test_a_new_database_file_is_no_problem(tmp_path):
    from batchhub.dbfile import sqlite_problem

    engine = {"ENGINE": "batchhub.sqlite3"}
    assert sqlite_problem({**engine, "NAME": str(tmp_path / "new.sqlite3")}) is None
    (tmp_path / "empty.sqlite3").write_bytes(b"")
    assert sqlite_problem({**engine, "NAME": str(tmp_path / "empty.sqlite3")}) is None
    sqlite3.connect(tmp_path / "real.sqlite3").execute("CREATE TABLE t (x)").connection.close()
    assert sqlite_problem({**engine, "NAME": str(tmp_path / "real.sqlite3")}) is None
    assert sqlite_problem({**engine, "NAME": ":memory:"}) is None
