"""Test-only stand-ins that workers load through BATCHHUB_PROCESSORS (never in production)."""

from __future__ import annotations

import time

from jobs.processors import RowError
from jobs.processors.template import TemplateProcessor


class WatchableTemplateProcessor(TemplateProcessor):
    """The real template processor, slowed to a few ms a row.

    A real worker fills 3,000 templates in a blink; the browser tests must be able to watch the
    progress bar move and press Pause before the end, as a person would on a bigger job.

    A row with a non-empty ``fail`` column fails with that text as its error: the browser tests
    need a job with failing rows and known reasons.
    """

    def process_row(self, row):
        time.sleep(0.005)
        reason = row.values.get("fail")
        if reason:
            raise RowError(str(reason))
        return super().process_row(row)
