"""Test-only stand-ins that workers load through BATCHHUB_PROCESSORS (never in production)."""

from __future__ import annotations

import time

from jobs.processors.template import TemplateProcessor


class WatchableTemplateProcessor(TemplateProcessor):
    """The real template processor, slowed to a few ms a row.

    A real worker fills 3,000 templates in a blink; the browser tests must be able to watch the
    progress bar move and press Pause before the end, as a person would on a bigger job.
    """

    def process_row(self, row):
        time.sleep(0.005)
        return super().process_row(row)
