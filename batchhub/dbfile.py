"""Whether the SQLite database file can be used, said in one line before anything opens it.

Django opens the file while it checks the models (a JSON field asks SQLite what it supports), so
a directory in the file's place, a file that is not a database or one this user may not write
stopped every process (migrate, the web, the worker, beat) with a long traceback ending in
"unable to open database file". Each of them asks here first and stops with the file and the
cause instead.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

SQLITE_HEADER = b"SQLite format 3\x00"


def _in_memory(name: str) -> bool:
    return name in ("", ":memory:") or "mode=memory" in name


def _user() -> str:
    return f"uid {os.geteuid()}"


def sqlite_problem(db: dict) -> str | None:
    """What stops this process from using the SQLite database `db` (a DATABASES entry), if any."""
    if not db["ENGINE"].endswith("sqlite3") or _in_memory(str(db["NAME"])):
        return None
    path = Path(db["NAME"])
    cause = _cause(path)
    if cause is None:
        return None
    return f"The database file {path} cannot be used (DATABASE_URL): {cause}."


def _cause(path: Path) -> str | None:
    if path.is_dir():
        return "it is a directory, not a file"
    folder = path.parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        return f"its directory {folder} {what}"
    # SQLite writes its write-ahead log and shared-memory files beside the database.
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"its directory {folder} is not writable by this user ({_user()}), "
            "and SQLite keeps its journal files there"
        )
    if not path.exists():
        return None  # migrate creates it
    if not os.access(path, os.R_OK):
        return f"it is not readable by this user ({_user()})"
    if not os.access(path, os.W_OK):
        return f"it is read-only for this user ({_user()})"
    return _unreadable(path)


def _unreadable(path: Path) -> str | None:
    with path.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        return "it is not a SQLite database (it does not start with SQLite's header)"
    connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # another process is writing: usable, just not this instant
        return f"SQLite cannot read it ({exc})"
    except sqlite3.DatabaseError as exc:
        return f"it is damaged ({exc})"
    finally:
        connection.close()
    return None


def database_problem() -> str | None:
    """What stops this process from using the configured SQLite database, if any."""
    from django.conf import settings

    for db in settings.DATABASES.values():
        problem = sqlite_problem(db)
        if problem:
            return problem
    return None


# manage.py commands that never open the database: an operator repairing the file needs them.
OFFLINE_COMMANDS = frozenset(
    {"help", "version", "collectstatic", "findstatic", "diffsettings", "startapp", "startproject"}
)


def needs_database(argv: list[str]) -> bool:
    """Whether the manage.py command in `argv` opens the database (asking for help does not)."""
    args = argv[1:]
    if not args or args[0] in OFFLINE_COMMANDS or args[0].startswith("-"):
        return False  # no command or a bare option (--help, --version): Django prints help
    return not ({"-h", "--help", "--version"} & set(args[1:]))


def refuse_unusable_database(argv: list[str] | None = None) -> None:
    """Stop this process with one line if the configured SQLite file cannot be used (and the
    manage.py command in `argv`, when given, would open it)."""
    if argv is not None and not needs_database(argv):
        return
    problem = database_problem()
    if problem:
        raise SystemExit(problem)
