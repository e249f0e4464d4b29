"""`manage.py compact_database`: give an embedded database's free space back to the file system.

A database file made before the embedded default gave space back by itself (auto_vacuum NONE)
is rewritten once with VACUUM, which switches it to incremental auto-vacuum: from then on the
periodic step (batchhub/dbspace.py) keeps it small. Every write waits while VACUUM copies, so
the command says first how long that should be. A file already in incremental mode gives its
free pages back in short slices instead, with nothing held.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.utils import OperationalError

from batchhub import dbspace


class Command(BaseCommand):
    help = (
        "Give the embedded SQLite database's free space back to the file system (VACUUM once for "
        "a file made before it could do that itself). Nothing to do on PostgreSQL."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help="Only say how large the file is, how much of it is free and what would be done.",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="Seconds to wait for the other writers' turn before giving up (default 60).",
        )

    def handle(self, *args, check: bool, wait: float, **options):
        if connection.vendor == "postgresql":
            self.stdout.write(
                "The database is PostgreSQL: its autovacuum gives space back by itself; "
                "nothing to do."
            )
            return
        now = dbspace.space(connection)
        if now is None:
            self.stdout.write("The database is in memory: it has no file to compact.")
            return
        mb = dbspace.megabytes
        self.stdout.write(
            f"{now.path}: {mb(now.file_bytes)} on disk, {mb(now.free_bytes)} of it free, "
            f"write-ahead log {mb(now.wal_bytes)}; auto_vacuum {now.mode}."
        )
        if now.mode == "incremental":
            self._slices(check)
        else:
            self._vacuum(now, check, wait)

    def _slices(self, check: bool) -> None:
        if check:
            self.stdout.write(
                "Its free space is given back a slice at a time, every minute while the worker "
                "and beat run; this command does it now, with nothing held."
            )
            return
        given = dbspace.give_back(connection, keep_bytes=0, seconds=float("inf"))
        self._done(
            f"Gave back {dbspace.megabytes(given.bytes)} in {given.slices} slices; the longest "
            f"held writes for {given.longest_hold * 1000:.0f} ms."
        )

    def _vacuum(self, now: dbspace.Space, check: bool, wait: float) -> None:
        self.stdout.write(
            f"VACUUM rewrites the {dbspace.megabytes(now.used_bytes)} in use and switches the file "
            f"to incremental auto-vacuum. Every write waits for it, {dbspace.vacuum_estimate(now)} "
            "here: a page "
            "that writes answers 503 after BATCHHUB_SQLITE_TIMEOUT (5 s), and a worker redoes the "
            "rows it held after 30 s, so for longer than that stop the site first (Ctrl-C on make "
            "run). It needs free disk space for a copy of the data in use."
        )
        if check:
            self.stdout.write("(--check: nothing done.)")
            return
        try:
            held = dbspace.compact(connection, timeout=wait)
        except OperationalError as exc:
            hint = ""
            if "locked" in str(exc):
                hint = f" The site's writers kept it busy for {wait:g} s: stop the site first."
            raise CommandError(f"Could not compact the database ({exc}).{hint}") from exc
        self._done(f"VACUUM held writes for {held:.2f} s.")

    def _done(self, what: str) -> None:
        after = dbspace.space(connection)
        mb = dbspace.megabytes
        self.stdout.write(
            f"{what} The file is now {mb(after.file_bytes)} ({mb(after.free_bytes)} free), the "
            f"write-ahead log {mb(after.wal_bytes)}; auto_vacuum {after.mode}."
        )
