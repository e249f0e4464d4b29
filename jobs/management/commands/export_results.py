from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from jobs import results
from jobs.models import Job


class Command(BaseCommand):
    help = "Write a job's results (CSV, JSONL or JSON) to a file or standard output."

    def add_arguments(self, parser):
        parser.add_argument("job_id", help="The job's id, e.g. job_01JD…")
        parser.add_argument("--format", choices=sorted(results.FORMATS), default="csv")
        parser.add_argument("--status", choices=results.STATUS_FILTERS, default="all")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")

    def handle(self, *args, job_id: str, format: str, status: str, output: str | None, **options):
        job = Job.objects.filter(public_id=job_id).first()
        if job is None:
            raise CommandError(f"No job {job_id}.")
        if output:
            with open(output, "wb") as fh:
                size = results.write_to(job, fh, format, status)
            self.stderr.write(f"Wrote {size} bytes to {output}.")
        else:
            results.write_to(job, sys.stdout.buffer, format, status)
            sys.stdout.flush()
