"""`make run` starts every process of the embedded setup, so when it starts, none of the previous
run's workers is alive: what they held goes back to work at once instead of after its lease."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db.models import Q

from jobs import chunks, finish
from jobs.models import Chunk, Job, JobStatus
from jobs.tasks import ingest_job


class Command(BaseCommand):
    help = (
        "Release the chunk leases of workers that are gone, restart the loops of processing "
        "jobs and the ingests that were cut. Only for a single-machine setup started as a whole "
        "(make run): with workers on other machines, leases and the reaper do this."
    )

    def handle(self, *args, **options):
        released = Chunk.objects.filter(
            job__status=JobStatus.PROCESSING, done=False, lease_until__isnull=False
        ).update(lease_until=None)
        processing = list(Job.objects.filter(status=JobStatus.PROCESSING))
        for job in processing:
            chunks.start_loops(job)
        # An ingest cut mid-file: taken up again now, not after the reaper's wait; it resumes
        # after the rows it wrote (jobs.ingest.loading).
        ingesting = list(
            Job.objects.filter(status=JobStatus.VALIDATING).values_list("pk", flat=True)
        )
        for pk in ingesting:
            ingest_job.delay(pk)
        # A job cancelled while a worker held rows of it: those rows will never run.
        left = Job.objects.filter(
            Q(pending__gt=0) | Q(running__gt=0),
            status__in=(JobStatus.CANCELLED, JobStatus.FAILED),
        )
        cancelled = sum(finish.cancel_leftovers(job.pk) for job in left)
        if processing or cancelled or ingesting:
            self.stdout.write(
                f"Resuming {len(processing)} processing job(s) left by the last run "
                f"({released} chunk(s) released), {len(ingesting)} ingest(s); "
                f"{cancelled} row(s) of cancelled jobs settled."
            )
